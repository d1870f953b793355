/*
 * segment.h - ordered batches of journal records, and their compressed on-disk form.
 *
 * Every message the gateway will send to Kafka (a telemetry record or a dead letter) is a
 * journal record with a record id (rid): a number that grows by one per record for the life
 * of the journal, so that rid order is arrival order. Records are grouped into segments; a
 * segment is the unit the journal compresses, writes and deletes, because an SD card's life
 * is counted in bytes written and one compressed batch costs a fraction of one row per
 * reading.
 *
 * A segment may hold a subset of a rid range (the records not yet delivered when it was
 * written), so each record carries its own rid. The serialized form is a sequence of
 * delta-encoded varint fields, then compressed as a whole (zstd or lz4): consecutive records
 * share keys and timestamps that the codec then removes.
 *
 * Not thread-safe: a segment belongs to one thread (the pipeline thread).
 */
#ifndef TG_SEGMENT_H
#define TG_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum tg_jrecord_kind {
    TG_JREC_TELEMETRY = 0, /* canonical record for the telemetry topic */
    TG_JREC_DLQ = 1,       /* rejected payload for the dead-letter topic */
};

/* One journal record. The byte fields point into the segment (or the caller's memory when
 * appending); aux carries kind-specific data (DLQ: the encoded reason headers). */
struct tg_jrecord {
    uint64_t rid;
    enum tg_jrecord_kind kind;
    int64_t ts_ms; /* Kafka timestamp: device event time (DLQ: receive time) */
    int64_t rx_ms; /* when the gateway received the message */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    const uint8_t *aux;
    size_t aux_len;
};

enum tg_codec_id {
    TG_CODEC_NONE = 0,
    TG_CODEC_ZSTD = 1,
    TG_CODEC_LZ4 = 2,
};

/* Parses "zstd", "lz4" or "none". Returns TG_ERR_CONFIG for anything else. */
tg_err tg_codec_id_parse(const char *name, enum tg_codec_id *out);
const char *tg_codec_id_name(enum tg_codec_id codec);

struct tg_segment;

/* A new empty segment that accepts records until its serialized size would pass max_bytes.
 * NULL on allocation failure. */
struct tg_segment *tg_segment_new(size_t max_bytes);
void tg_segment_destroy(struct tg_segment *seg);

/* Empties the segment for reuse, keeping its buffers. */
void tg_segment_reset(struct tg_segment *seg);

/* Appends a copy of rec. rids must increase strictly within a segment.
 * TG_ERR_FULL when the record does not fit (a record larger than max_bytes on its own is
 * accepted into an empty segment, so no record is ever unstorable). */
tg_err tg_segment_append(struct tg_segment *seg, const struct tg_jrecord *rec);

size_t tg_segment_count(const struct tg_segment *seg);
size_t tg_segment_raw_bytes(const struct tg_segment *seg);

/* Record idx (0-based, in append order). Pointers stay valid until the segment changes. */
void tg_segment_get(const struct tg_segment *seg, size_t idx, struct tg_jrecord *out);

/* Index of the record with this rid, or -1 when the segment does not hold it. */
long tg_segment_find(const struct tg_segment *seg, uint64_t rid);

/* Compresses the serialized records into *out (malloc'd, caller frees) with codec.
 * level: zstd level (ignored by lz4/none). A zstd frame carries its content size and a
 * checksum of the content, so that a damaged row is detected when it is read back. */
tg_err tg_segment_compress(const struct tg_segment *seg, enum tg_codec_id codec, int level,
                           uint8_t **out, size_t *out_len);

/* Largest serialized segment tg_segment_load() accepts: journal.segment_bytes at its
 * largest (64 MiB) plus one record on its own (a payload of at most 1 MiB and its headers),
 * with room to spare. A stored size beyond it can only be corruption; refusing it before
 * allocating keeps a corrupt row from looking like a transient shortage of memory. */
#ifndef TG_SEGMENT_RAW_MAX
#define TG_SEGMENT_RAW_MAX ((size_t)80 << 20)
#endif

/* Replaces the segment's content by the records in blob, as written by tg_segment_compress.
 * raw_bytes is the serialized size recorded with the blob; every record's rid must lie in
 * [first_rid, last_rid], the range the segment was cut from (the caller indexes its bitmaps
 * with rid - first_rid). Everything read is checked: the codec's frame (zstd frames written
 * since the checksum flag carry a content checksum, which is verified), the stored size
 * against the frame and TG_SEGMENT_RAW_MAX, every field length, rids increasing and in range.
 * Corrupt input is TG_ERR_INTERNAL (permanent: the row is bad, retrying cannot help) and
 * leaves the segment empty; TG_ERR_NOMEM only when a plausible size cannot be allocated. */
tg_err tg_segment_load(struct tg_segment *seg, enum tg_codec_id codec, const uint8_t *blob,
                       size_t blob_len, size_t raw_bytes, uint64_t first_rid, uint64_t last_rid);

/* Record headers carried in aux (DLQ reason, MQTT topic...): name/value pairs, each
 * length-prefixed. tg_jrecord_headers_put appends one pair to buf (cap bytes, *len in
 * use): TG_ERR_FULL when it does not fit. tg_jrecord_headers_next walks them: *pos starts
 * at 0; returns false at the end or on malformed input. */
tg_err tg_jrecord_headers_put(uint8_t *buf, size_t cap, size_t *len, const char *name,
                              const void *value, size_t value_len);
bool tg_jrecord_headers_next(const uint8_t *aux, size_t aux_len, size_t *pos, const char **name,
                             size_t *name_len, const uint8_t **value, size_t *value_len);

#endif
