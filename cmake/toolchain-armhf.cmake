# Cross-compile for 32-bit ARM boards with hardware float (Pi OS 32-bit, BeagleBone Black,
# generic armhf). Needs gcc-arm-linux-gnueabihf and the armhf -dev packages:
#   dpkg --add-architecture armhf && apt-get update
#   apt-get install gcc-arm-linux-gnueabihf librdkafka-dev:armhf libmosquitto-dev:armhf ...
# Usage: cmake -S . -B build/armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-armhf.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(TG_TRIPLET arm-linux-gnueabihf)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain-debian-multiarch.cmake)
