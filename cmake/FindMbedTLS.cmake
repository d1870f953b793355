# Finds mbedtls. Uses its pkg-config file where the distribution ships one (mbedtls >= 3.x),
# otherwise probes for the header and libraries. Defines MbedTLS::mbedcrypto and
# MbedTLS::mbedtls (which also links mbedx509 and mbedcrypto).
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_MBEDCRYPTO QUIET mbedcrypto)
endif()

find_path(MBEDTLS_INCLUDE_DIR mbedtls/md.h HINTS ${PC_MBEDCRYPTO_INCLUDE_DIRS})
find_library(MBEDCRYPTO_LIBRARY mbedcrypto HINTS ${PC_MBEDCRYPTO_LIBRARY_DIRS})
find_library(MBEDX509_LIBRARY mbedx509 HINTS ${PC_MBEDCRYPTO_LIBRARY_DIRS})
find_library(MBEDTLS_LIBRARY mbedtls HINTS ${PC_MBEDCRYPTO_LIBRARY_DIRS})

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MbedTLS REQUIRED_VARS MBEDTLS_INCLUDE_DIR MBEDCRYPTO_LIBRARY
                                  MBEDX509_LIBRARY MBEDTLS_LIBRARY)

if(MbedTLS_FOUND AND NOT TARGET MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedcrypto PROPERTIES IMPORTED_LOCATION "${MBEDCRYPTO_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${MBEDTLS_INCLUDE_DIR}")
  add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedx509 PROPERTIES IMPORTED_LOCATION "${MBEDX509_LIBRARY}"
                        INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedtls PROPERTIES IMPORTED_LOCATION "${MBEDTLS_LIBRARY}"
                        INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
endif()
mark_as_advanced(MBEDTLS_INCLUDE_DIR MBEDCRYPTO_LIBRARY MBEDX509_LIBRARY MBEDTLS_LIBRARY)
