/* libFuzzer target: the native payload decoder (CBOR and JSON), forced to the native family.
 * The checks on each input are in fuzz_common.h. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(TG_FORMAT_NATIVE, data, size);
    return 0;
}
