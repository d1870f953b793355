# Cross-compile for 64-bit ARM boards (Pi 3/4/5, Zero 2 W on a 64-bit OS, generic arm64).
# Needs Debian's gcc-aarch64-linux-gnu and the arm64 -dev packages of the dependencies:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu librdkafka-dev:arm64 libmosquitto-dev:arm64 ...
# Usage: cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(TG_TRIPLET aarch64-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-debian-multiarch.cmake)
