# tidegate_flags: an INTERFACE target that carries the project's compile settings.
# Every tidegate target links it PRIVATE, so no flag is set directory-wide.
add_library(tidegate_flags INTERFACE)
target_compile_definitions(tidegate_flags INTERFACE _GNU_SOURCE)
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
