/*
 * segment.c - journal record framing and segment compression.
 *
 * Serialized record (all integers LEB128 varints, signed ones zigzag-encoded):
 *   rid - previous rid (the first record: the rid itself)
 *   ts_ms - previous ts_ms   (signed)
 *   rx_ms - previous rx_ms   (signed)
 *   kind
 *   key_len, key bytes
 *   value_len, value bytes
 *   aux_len, aux bytes
 * Deltas keep the numbers short and repetitive, which is what the block codec then feeds on.
 */
#include "segment.h"

#include <lz4.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

struct rec_index {
    uint64_t rid;
    int64_t ts_ms;
    int64_t rx_ms;
    uint32_t body_off; /* offset of the kind field */
};

struct tg_segment {
    size_t max_bytes;
    uint8_t *buf;
    size_t len, cap;
    struct rec_index *idx;
    size_t count, idx_cap;
};

tg_err tg_codec_id_parse(const char *name, enum tg_codec_id *out)
{
    if (strcmp(name, "zstd") == 0)
        *out = TG_CODEC_ZSTD;
    else if (strcmp(name, "lz4") == 0)
        *out = TG_CODEC_LZ4;
    else if (strcmp(name, "none") == 0)
        *out = TG_CODEC_NONE;
    else
        return TG_ERR_CONFIG;
    return TG_OK;
}

const char *tg_codec_id_name(enum tg_codec_id codec)
{
    switch (codec) {
    case TG_CODEC_ZSTD:
        return "zstd";
    case TG_CODEC_LZ4:
        return "lz4";
    default:
        return "none";
    }
}

struct tg_segment *tg_segment_new(size_t max_bytes)
{
    struct tg_segment *seg = calloc(1, sizeof *seg);
    if (!seg)
        return NULL;
    seg->max_bytes = max_bytes;
    return seg;
}

void tg_segment_destroy(struct tg_segment *seg)
{
    if (!seg)
        return;
    free(seg->buf);
    free(seg->idx);
    free(seg);
}

void tg_segment_reset(struct tg_segment *seg)
{
    seg->len = 0;
    seg->count = 0;
}

size_t tg_segment_count(const struct tg_segment *seg) { return seg->count; }

size_t tg_segment_raw_bytes(const struct tg_segment *seg) { return seg->len; }

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* Reads a varint from [*p, end); false on truncation or overlong encoding. */
static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool reserve(uint8_t **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need)
        ncap *= 2;
    void *nbuf = realloc(*buf, ncap * elem);
    if (!nbuf)
        return false;
    *buf = nbuf;
    *cap = ncap;
    return true;
}

tg_err tg_segment_append(struct tg_segment *seg, const struct tg_jrecord *rec)
{
    /* 10 bytes is the longest varint: 7 varints plus the three byte fields. */
    size_t worst = 7 * 10 + rec->key_len + rec->value_len + rec->aux_len;
    uint64_t prev_rid = 0;
    int64_t prev_ts = 0, prev_rx = 0;
    if (seg->count > 0) {
        const struct rec_index *last = &seg->idx[seg->count - 1];
        if (rec->rid <= last->rid)
            return TG_ERR_INTERNAL;
        if (seg->len + worst > seg->max_bytes)
            return TG_ERR_FULL;
        prev_rid = last->rid;
        prev_ts = last->ts_ms;
        prev_rx = last->rx_ms;
    }
    if (seg->len + worst > UINT32_MAX)
        return TG_ERR_FULL;
    if (!reserve(&seg->buf, &seg->cap, seg->len + worst, 1))
        return TG_ERR_NOMEM;
    if (!reserve((uint8_t **)&seg->idx, &seg->idx_cap, seg->count + 1, sizeof *seg->idx))
        return TG_ERR_NOMEM;

    uint8_t *p = seg->buf + seg->len;
    p += put_varint(p, rec->rid - prev_rid);
    p += put_varint(p, zigzag(rec->ts_ms - prev_ts));
    p += put_varint(p, zigzag(rec->rx_ms - prev_rx));
    uint32_t body_off = (uint32_t)(p - seg->buf);
    p += put_varint(p, (uint64_t)rec->kind);
    const struct {
        const uint8_t *data;
        size_t len;
    } fields[3] = {{rec->key, rec->key_len}, {rec->value, rec->value_len}, {rec->aux, rec->aux_len}};
    for (int i = 0; i < 3; i++) {
        p += put_varint(p, fields[i].len);
        if (fields[i].len)
            memcpy(p, fields[i].data, fields[i].len);
        p += fields[i].len;
    }
    seg->idx[seg->count++] = (struct rec_index){
        .rid = rec->rid, .ts_ms = rec->ts_ms, .rx_ms = rec->rx_ms, .body_off = body_off};
    seg->len = (size_t)(p - seg->buf);
    return TG_OK;
}

/* Parses the body (kind and byte fields) at p; false if it runs past end. */
static bool parse_body(const uint8_t **p, const uint8_t *end, struct tg_jrecord *out)
{
    uint64_t kind, len[3];
    const uint8_t *data[3];
    if (!get_varint(p, end, &kind) || kind > TG_JREC_DLQ)
        return false;
    for (int i = 0; i < 3; i++) {
        if (!get_varint(p, end, &len[i]) || len[i] > (uint64_t)(end - *p))
            return false;
        data[i] = *p;
        *p += len[i];
    }
    out->kind = (enum tg_jrecord_kind)kind;
    out->key = data[0];
    out->key_len = len[0];
    out->value = data[1];
    out->value_len = len[1];
    out->aux = data[2];
    out->aux_len = len[2];
    return true;
}

void tg_segment_get(const struct tg_segment *seg, size_t idx, struct tg_jrecord *out)
{
    const struct rec_index *ri = &seg->idx[idx];
    const uint8_t *p = seg->buf + ri->body_off;
    out->rid = ri->rid;
    out->ts_ms = ri->ts_ms;
    out->rx_ms = ri->rx_ms;
    /* Validated when appended or loaded: cannot fail here. */
    (void)parse_body(&p, seg->buf + seg->len, out);
}

long tg_segment_find(const struct tg_segment *seg, uint64_t rid)
{
    size_t lo = 0, hi = seg->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (seg->idx[mid].rid < rid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < seg->count && seg->idx[lo].rid == rid) ? (long)lo : -1;
}

/* ZSTD_compress() with the frame's content checksum on (4 bytes per segment): without it a
 * flipped bit in a stored literal decompresses "successfully" into a wrong record. The
 * context is made per call, as ZSTD_compress() does internally: one compression per segment
 * written, so this costs nothing ZSTD_compress() did not. */
static tg_err zstd_compress_checked(void *dst, size_t cap, const void *src, size_t len, int level,
                                    size_t *out_len)
{
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx)
        return TG_ERR_NOMEM;
    size_t n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(n))
        n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(n))
        n = ZSTD_compress2(cctx, dst, cap, src, len);
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(n))
        return TG_ERR_INTERNAL;
    *out_len = n;
    return TG_OK;
}

tg_err tg_segment_compress(const struct tg_segment *seg, enum tg_codec_id codec, int level,
                           uint8_t **out, size_t *out_len)
{
    size_t bound;
    switch (codec) {
    case TG_CODEC_ZSTD:
        bound = ZSTD_compressBound(seg->len);
        break;
    case TG_CODEC_LZ4:
        if (seg->len > (size_t)LZ4_MAX_INPUT_SIZE)
            return TG_ERR_INTERNAL;
        bound = (size_t)LZ4_compressBound((int)seg->len);
        break;
    default:
        bound = seg->len;
        break;
    }
    uint8_t *dst = malloc(bound ? bound : 1);
    if (!dst)
        return TG_ERR_NOMEM;
    size_t n;
    switch (codec) {
    case TG_CODEC_ZSTD: {
        tg_err e = zstd_compress_checked(dst, bound, seg->buf, seg->len, level, &n);
        if (e != TG_OK) {
            free(dst);
            return e;
        }
        break;
    }
    case TG_CODEC_LZ4: {
        int r = LZ4_compress_default((const char *)seg->buf, (char *)dst, (int)seg->len, (int)bound);
        if (r <= 0 && seg->len > 0) {
            free(dst);
            return TG_ERR_INTERNAL;
        }
        n = (size_t)r;
        break;
    }
    default:
        if (seg->len)
            memcpy(dst, seg->buf, seg->len);
        n = seg->len;
        break;
    }
    *out = dst;
    *out_len = n;
    return TG_OK;
}

/* Rebuilds the index from the serialized bytes in seg->buf: TG_ERR_INTERNAL when they are
 * corrupt (a field runs past the end, a rid does not increase, or one falls outside
 * [first_rid, last_rid]), TG_ERR_NOMEM when the index cannot grow. */
static tg_err reindex(struct tg_segment *seg, uint64_t first_rid, uint64_t last_rid)
{
    const uint8_t *p = seg->buf, *end = seg->buf + seg->len;
    uint64_t rid = 0;
    int64_t ts = 0, rx = 0;
    seg->count = 0;
    while (p < end) {
        uint64_t drid, dts, drx;
        if (!get_varint(&p, end, &drid) || !get_varint(&p, end, &dts) ||
            !get_varint(&p, end, &drx))
            return TG_ERR_INTERNAL;
        if (drid == 0 && seg->count > 0)
            return TG_ERR_INTERNAL; /* rids must increase */
        /* Checked before adding, so a huge delta cannot wrap around into the range. */
        if (drid > last_rid - rid)
            return TG_ERR_INTERNAL;
        rid += drid;
        if (rid < first_rid)
            return TG_ERR_INTERNAL;
        ts = (int64_t)((uint64_t)ts + (uint64_t)unzigzag(dts));
        rx = (int64_t)((uint64_t)rx + (uint64_t)unzigzag(drx));
        uint32_t body_off = (uint32_t)(p - seg->buf);
        struct tg_jrecord tmp;
        if (!parse_body(&p, end, &tmp))
            return TG_ERR_INTERNAL;
        if (!reserve((uint8_t **)&seg->idx, &seg->idx_cap, seg->count + 1, sizeof *seg->idx))
            return TG_ERR_NOMEM;
        seg->idx[seg->count++] =
            (struct rec_index){.rid = rid, .ts_ms = ts, .rx_ms = rx, .body_off = body_off};
    }
    return TG_OK;
}

/* Whether raw_bytes can be what blob decompresses to, judged before allocating for it. */
static bool plausible_size(enum tg_codec_id codec, const uint8_t *blob, size_t blob_len,
                           size_t raw_bytes)
{
    if (raw_bytes > TG_SEGMENT_RAW_MAX)
        return false;
    switch (codec) {
    case TG_CODEC_ZSTD: {
        /* One whole frame, whose header states exactly the stored size (ZSTD_compress2
         * always writes it when the input size is known, as it is here). */
        if (ZSTD_findFrameCompressedSize(blob, blob_len) != blob_len)
            return false;
        unsigned long long content = ZSTD_getFrameContentSize(blob, blob_len);
        return content == (unsigned long long)raw_bytes;
    }
    case TG_CODEC_LZ4:
        /* An LZ4 block expands at most about 255 times (a match token's length bytes). */
        return blob_len <= (size_t)LZ4_MAX_INPUT_SIZE && raw_bytes / 255 <= blob_len;
    case TG_CODEC_NONE:
        return blob_len == raw_bytes;
    default:
        return false;
    }
}

tg_err tg_segment_load(struct tg_segment *seg, enum tg_codec_id codec, const uint8_t *blob,
                       size_t blob_len, size_t raw_bytes, uint64_t first_rid, uint64_t last_rid)
{
    tg_segment_reset(seg);
    if (first_rid > last_rid || !plausible_size(codec, blob, blob_len, raw_bytes))
        return TG_ERR_INTERNAL;
    if (!reserve(&seg->buf, &seg->cap, raw_bytes ? raw_bytes : 1, 1))
        return TG_ERR_NOMEM;
    size_t n;
    switch (codec) {
    case TG_CODEC_ZSTD:
        /* Verifies the content checksum when the frame has one (rows written before the
         * flag was set have none and are still read). */
        n = ZSTD_decompress(seg->buf, raw_bytes, blob, blob_len);
        if (ZSTD_isError(n))
            return TG_ERR_INTERNAL;
        break;
    case TG_CODEC_LZ4: {
        int r = LZ4_decompress_safe((const char *)blob, (char *)seg->buf, (int)blob_len,
                                    (int)raw_bytes);
        if (r < 0)
            return TG_ERR_INTERNAL;
        n = (size_t)r;
        break;
    }
    default: /* TG_CODEC_NONE: plausible_size() checked blob_len == raw_bytes */
        if (blob_len)
            memcpy(seg->buf, blob, blob_len);
        n = blob_len;
        break;
    }
    if (n != raw_bytes)
        return TG_ERR_INTERNAL;
    seg->len = n;
    tg_err e = reindex(seg, first_rid, last_rid);
    if (e != TG_OK)
        tg_segment_reset(seg);
    return e;
}

/* Headers: repeated (varint name_len, name, varint value_len, value) until aux ends. */
tg_err tg_jrecord_headers_put(uint8_t *buf, size_t cap, size_t *len, const char *name,
                              const void *value, size_t value_len)
{
    size_t name_len = strlen(name);
    if (*len + 20 + name_len + value_len > cap)
        return TG_ERR_FULL;
    uint8_t *p = buf + *len;
    p += put_varint(p, name_len);
    memcpy(p, name, name_len);
    p += name_len;
    p += put_varint(p, value_len);
    if (value_len)
        memcpy(p, value, value_len);
    p += value_len;
    *len = (size_t)(p - buf);
    return TG_OK;
}

bool tg_jrecord_headers_next(const uint8_t *aux, size_t aux_len, size_t *pos, const char **name,
                             size_t *name_len, const uint8_t **value, size_t *value_len)
{
    const uint8_t *p = aux + *pos, *end = aux + aux_len;
    uint64_t nl, vl;
    if (p >= end || !get_varint(&p, end, &nl) || nl > (uint64_t)(end - p))
        return false;
    *name = (const char *)p;
    *name_len = (size_t)nl;
    p += nl;
    if (!get_varint(&p, end, &vl) || vl > (uint64_t)(end - p))
        return false;
    *value = p;
    *value_len = (size_t)vl;
    p += vl;
    *pos = (size_t)(p - aux);
    return true;
}
