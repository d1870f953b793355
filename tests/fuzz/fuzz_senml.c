/* libFuzzer target: the SenML decoder (CBOR and JSON), forced to the SenML family.
 * The checks on each input are in fuzz_common.h. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(TG_FORMAT_SENML, data, size);
    return 0;
}
