/*
 * level_window.h - the level detector's rolling window kept in order (level_window.c has the
 * layout and the reasons). The per-point operations are here, inline, since the detector
 * calls them for every point; engine_internal.h declares the rest.
 */
#ifndef TG_LEVEL_WINDOW_H
#define TG_LEVEL_WINDOW_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The index of the value written to slot pos in a full window of n (n - 1 when none is:
 * a layout that lost a slot, which no checked snapshot gives). Eight slot bytes at a time
 * (the bytes are padded to 8; a padding byte, 0, comes after every real one, so the first
 * match is real). */
static inline int level_window__find_slot(const uint8_t *slot, int n, int pos)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    uint64_t pattern = ones * (uint8_t)pos;
    /* Every word is looked at and the first match kept by selects, not by leaving the loop:
     * where the oldest value sits in the order is random, so "is it in this word" would be
     * a coin toss for the branch predictor; the trip count is the same at every point. */
    int k = n - 1, found = 0;
    for (int base = 0; base < n; base += 8) {
        uint64_t w;
        memcpy(&w, slot + base, sizeof w);
        w ^= pattern;
        uint64_t zero = (w - ones) & ~w & highs; /* lowest set bit: the first equal byte */
        int at = base + __builtin_ctzll(zero | (UINT64_C(1) << 63)) / 8;
        int hit = zero != 0, take = hit & !found;
        k += (at - k) & -take; /* k = take ? at : k, in arithmetic the compiler keeps */
        found |= hit;
    }
    return k < n ? k : n - 1;
#else
    int k = 0;
    while (k < n - 1 && slot[k] != pos)
        k++;
    return k;
#endif
}

/* Adds x in slot pos; when the window is full (n == window) the value of slot pos leaves. */
static inline void level_window__push(unsigned char *lw, int window, int n, int pos, double x)
{
    double *v = (double *)(void *)lw;
    uint8_t *slot = lw + (size_t)window * sizeof(double);
    int k = n;
    if (n == window) {
        /* Full: the value written to slot pos leaves, and x takes its place, moved to where
         * its order puts it. (A layout that lost a slot cannot come from a snapshot, which is
         * checked; the last value leaves then.) */
        k = level_window__find_slot(slot, n, pos);
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

/* The median of the n (>= 1) values, as a sort would compute it. */
static inline double level_window__median(const unsigned char *lw, int n)
{
    const double *v = (const double *)(const void *)lw;
    return (n & 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The larger (smaller) of two deviations, each a non-negative double or -1 ("none"): such
 * numbers are ordered as their bits read as signed integers, and an integer select becomes a
 * conditional move, where the compiler made the comparison of doubles a branch, a coin toss
 * for the predictor at every point. The result is the comparison's: equal deviations have
 * equal bits (fabs gives +0 only, and none is NaN: values are finite). */
static inline double level_window__dev_max(double a, double b)
{
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    int64_t m = ia > ib ? ia : ib;
    double r;
    memcpy(&r, &m, sizeof r);
    return r;
}
static inline double level_window__dev_min(double a, double b)
{
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    int64_t m = ia < ib ? ia : ib;
    double r;
    memcpy(&r, &m, sizeof r);
    return r;
}

/* The median of |value - med| over the n values (the MAD before its 1.4826), as a sort of
 * the deviations would compute it; med must be level_window__median's. */
static inline double level_window__mad_raw(const unsigned char *lw, int n, double med)
{
    const double *v = (const double *)(const void *)lw;
    /* |v - med| grows from the middle outwards on both sides: L[a] = |v[m-1-a] - med| below
     * it (m = n/2 values), R[b] = |v[m+b] - med| above it (n - m values). The MAD is the
     * K-th smallest of both runs (K = n/2 + 1; the K-1-th too for an even n): how many of the
     * K smallest come from L is counted rather than merged (a merge's every step is a coin
     * toss for the branch predictor). */
    int m = n / 2, nl = m, nr = n - m, k = m + 1;
    int lo = k - nr > 0 ? k - nr : 0, hi = nl < k ? nl : k;
    /* "L[a] <= R[k-a-1]" (L[a] is among the k smallest) holds for a = lo .. some point and
     * not after, so counting where it holds finds that point: independent comparisons that
     * need no branch, which beats a binary search's unpredictable ones at these sizes. */
    for (int a = lo; a < hi; a++)
        lo += fabs(v[m - 1 - a] - med) <= fabs(v[m + k - a - 1] - med);
    int a = lo, b = k - lo;
    /* The k smallest are L[0..a) and R[0..b): the largest of them, and the one before it. */
    double l1 = a > 0 ? fabs(v[m - a] - med) : -1, l2 = a > 1 ? fabs(v[m - a + 1] - med) : -1;
    double r1 = b > 0 ? fabs(v[m + b - 1] - med) : -1, r2 = b > 1 ? fabs(v[m + b - 2] - med) : -1;
    /* (l2 <= l1 and r2 <= r1: the second largest is the larger of the smaller top and the
     * two runners-up. Selects on the values' bits: see level_window__dev_max.) */
    double cur = level_window__dev_max(l1, r1);
    if (n & 1)
        return cur;
    double low_top = level_window__dev_min(l1, r1), up2 = level_window__dev_max(l2, r2);
    double prev = level_window__dev_max(low_top, up2);
    return 0.5 * (prev + cur);
}

#endif
