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
    /* |v - med| grows from the middle outwards on both sides: L[a] = |v[m-1-a] - med| below
     * it (m = n/2 values), R[b] = |v[m+b] - med| above it (n - m values). The MAD is the
     * K-th smallest of both runs (K = n/2 + 1; the K-1-th too for an even n): a binary search
     * for how many of the K smallest come from L, a few steps rather than a merge whose
     * every step is a coin toss for the branch predictor. */
    int m = n / 2, nl = m, nr = n - m, k = m + 1;
    int lo = k - nr > 0 ? k - nr : 0, hi = nl < k ? nl : k;
    while (lo < hi) {
        int a = (lo + hi) / 2;
        /* L[a] <= R[k-a-1]: L[a] is among the k smallest too */
        if (fabs(v[m - 1 - a] - med) <= fabs(v[m + k - a - 1] - med))
            lo = a + 1;
        else
            hi = a;
    }
    int a = lo, b = k - lo;
    /* The k smallest are L[0..a) and R[0..b): the largest of them, and the one before it. */
    double l1 = a > 0 ? fabs(v[m - a] - med) : -1, l2 = a > 1 ? fabs(v[m - a + 1] - med) : -1;
    double r1 = b > 0 ? fabs(v[m + b - 1] - med) : -1, r2 = b > 1 ? fabs(v[m + b - 2] - med) : -1;
    double cur, prev;
    if (l1 >= r1) {
        cur = l1;
        prev = l2 > r1 ? l2 : r1;
    } else {
        cur = r1;
        prev = l1 > r2 ? l1 : r2;
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
