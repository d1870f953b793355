#include "record.h"

/* [A-Za-z0-9_.-] as a 128-bit set, one bit per ASCII code: a device id is checked for every
 * reading the worker scores and the gateway takes, and a bit test costs a few instructions
 * where the chain of ranges cost fifteen per character. */
static const uint64_t id_chars[2] = {
    UINT64_C(0x03ff600000000000), /* '-' '.' '0'..'9' (codes 0..63) */
    UINT64_C(0x07fffffe87fffffe), /* 'A'..'Z' '_' 'a'..'z' (codes 64..127) */
};

bool tg_device_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > TG_DEVICE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c >= 128 || !((id_chars[c >> 6] >> (c & 63)) & 1))
            return false;
    }
    return true;
}
