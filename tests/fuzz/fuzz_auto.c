/* libFuzzer target: format detection and whichever decoder it picks.
 * The checks on each input are in fuzz_common.h. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(TG_FORMAT_AUTO, data, size);
    return 0;
}
