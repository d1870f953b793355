#include "backoff.h"

uint32_t tg_backoff_ceiling_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt)
{
    uint64_t ceiling = min_ms;
    /* Doubling stops at the cap, so neither the shift nor the product can overflow. */
    for (unsigned i = 0; i < attempt && ceiling > 0 && ceiling < max_ms; i++)
        ceiling *= 2;
    return ceiling < max_ms ? (uint32_t)ceiling : max_ms;
}

uint32_t tg_backoff_delay_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt,
                             uint32_t random_bits)
{
    uint64_t span = (uint64_t)tg_backoff_ceiling_ms(min_ms, max_ms, attempt) + 1;
    /* Multiply-shift maps 32 bits onto [0, span) without the bias of a modulo. */
    return (uint32_t)((random_bits * span) >> 32);
}
