# Shared part of the cross toolchain files: Debian multiarch layout, where the target's
# libraries live in /usr/lib/${TG_TRIPLET} and its headers in /usr/include (shared) or
# /usr/include/${TG_TRIPLET}. pkg-config is pointed at the target's .pc files only, so the
# dependency probes in TidegateDeps.cmake find the target libraries, never the host's.
set(CMAKE_C_COMPILER ${TG_TRIPLET}-gcc)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_LIBRARY_ARCHITECTURE ${TG_TRIPLET})
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${TG_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
# Tests need the target's cmocka and would run under emulation only: off by default.
set(TG_BUILD_TESTS OFF CACHE BOOL "Build the test suite")
