/*
 * level_window.c - the level detector's rolling window kept in order, so that its median and
 * MAD cost a few steps per point instead of two sorts of the window.
 *
 * Layout (level_window__bytes): the window's values sorted ascending (double x window), then
 * one byte per value naming the ring slot it was written to (0 .. window-1), padded to 8.
 * The slot is the value's age: once the window is full, the value in slot `pos` is the
 * oldest and is the one a new value replaces, exactly as in a ring. The ring itself (values
 * by slot, what snapshots carry) is recovered by inverting the slot bytes.
 *
 * Numerics: the median is the same element (or the same two, averaged the same way) that a
 * sort of the ring picks; the deviations from it are computed by the same expression and the
 * MAD is picked from them by a search rather than a sort: they are the same numbers in the
 * same order, so the scores equal a sort's bit for bit (test_engine_golden, which also checks
 * random windows against a sort).
 */
#include <math.h>
#include <string.h>

#include "engine_internal.h"
#include "level_window.h"

size_t level_window__bytes(int window)
{
    return (size_t)window * sizeof(double) + (((size_t)window + 7) & ~(size_t)7);
}

void level_window__ring(const unsigned char *lw, int window, int n, double *ring)
{
    const double *v = (const double *)(const void *)lw;
    const uint8_t *slot = lw + (size_t)window * sizeof(double);
    for (int j = 0; j < n; j++)
        ring[slot[j]] = v[j];
}

void level_window__load(unsigned char *lw, int window, const double *ring, int n)
{
    for (int i = 0; i < n; i++)
        level_window__push(lw, window, i, i, ring[i]);
}
