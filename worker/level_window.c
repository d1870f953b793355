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
 * MAD is picked from them by a merge rather than a sort: they are the same numbers in the
 * same order, so the scores equal a sort's bit for bit (test_engine_golden, which also checks
 * random windows against a sort).
 */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

size_t level_window__bytes(int window)
{
    return (size_t)window * sizeof(double) + (((size_t)window + 7) & ~(size_t)7);
}

static uint8_t *slots_of(unsigned char *lw, int window)
{
    return lw + (size_t)window * sizeof(double);
}

void level_window__push(unsigned char *lw, int window, int n, int pos, double x)
{
    double *v = (double *)(void *)lw;
    uint8_t *slot = slots_of(lw, window);
    int k = n;
    if (n == window) {
        /* Full: the value written to slot pos leaves, and x takes its place, moved to where
         * its order puts it. (A layout that lost a slot cannot come from a snapshot, which is
         * checked; the last value leaves then.) */
        k = 0;
        while (k < n - 1 && slot[k] != pos)
            k++;
        while (k + 1 < n && v[k + 1] < x) {
            v[k] = v[k + 1];
            slot[k] = slot[k + 1];
            k++;
        }
    }
    /* Among equal values the order does not matter. */
    while (k > 0 && v[k - 1] > x) {
        v[k] = v[k - 1];
        slot[k] = slot[k - 1];
        k--;
    }
    v[k] = x;
    slot[k] = (uint8_t)pos;
}

double level_window__median(const unsigned char *lw, int n)
{
    const double *v = (const double *)(const void *)lw;
    return (n & 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double level_window__mad_raw(const unsigned char *lw, int n, double med)
{
    const double *v = (const double *)(const void *)lw;
    /* |v - med| grows from the middle outwards on both sides: below it from v[n/2 - 1]
     * down, above it from v[n/2] up. The n/2-th smallest deviation (and the one before it,
     * for an even n) is found by merging the two runs. */
    int i = n / 2 - 1, j = n / 2;
    double prev = 0, cur = 0;
    for (int t = 0; t <= n / 2; t++) {
        prev = cur;
        if (j >= n || (i >= 0 && fabs(v[i] - med) <= fabs(v[j] - med)))
            cur = fabs(v[i--] - med);
        else
            cur = fabs(v[j++] - med);
    }
    return (n & 1) ? cur : 0.5 * (prev + cur);
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
