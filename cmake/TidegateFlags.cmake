# tidegate_flags: an INTERFACE target that carries the project's compile settings.
# Every tidegate target links it PRIVATE, so no flag is set directory-wide.
add_library(tidegate_flags INTERFACE)
# _FILE_OFFSET_BITS=64: on 32-bit boards (armhf) off_t, stat and readdir are 64-bit too, so a
# journal past 2 GiB and a directory on a filesystem with 64-bit inode numbers or hashes work
# (the armhf tier under qemu-user found readdir() failing with EOVERFLOW without it).
target_compile_definitions(tidegate_flags INTERFACE _GNU_SOURCE _FILE_OFFSET_BITS=64)
target_compile_options(tidegate_flags INTERFACE -Wall -Wextra -Wshadow -Wstrict-prototypes
                       -Wmissing-prototypes -Wformat=2 -Wno-unused-parameter)
if(TG_WERROR)
  target_compile_options(tidegate_flags INTERFACE -Werror)
endif()
if(TG_SANITIZE)
  target_compile_options(tidegate_flags INTERFACE -fsanitize=address,undefined
                         -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(tidegate_flags INTERFACE -fsanitize=address,undefined)
endif()
