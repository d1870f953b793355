/*
 * codec.h - payload decoding: device bytes in, readings out.
 *
 * One decoder turns the payload of one MQTT message into readings (record.h). It accepts
 * the four payload forms of design.md section 4:
 *
 *   native CBOR   a CBOR map {"seq","boot","ts","m", optional "sig"}   first byte: major type 5
 *   native JSON   the same keys as a JSON object, never signed           first byte: '{'
 *   SenML CBOR    RFC 8428 pack, integer labels                          first byte: major type 4
 *   SenML JSON    RFC 8428 pack                                          first byte: '['
 *
 * ("first byte" skips leading JSON whitespace; a leading CBOR self-describe tag 55799 is
 * allowed.) Decoding is strict: every rejection carries a specific tg_err, which is the
 * payload's DLQ reason, and a detail text (tg_decoder_error()) naming the field and the
 * problem, e.g. `field "ts": expected unsigned integer, got text string`.
 *
 * Memory: a decoder allocates all it needs in tg_decoder_new(), sized by the limits. CBOR
 * decoding (libcbor's streaming decoder) then allocates nothing per message; JSON decoding
 * uses jansson, which allocates its document internally and frees it before returning.
 *
 * Threads: a decoder is not shared: use one per thread. Distinct decoders are independent.
 *
 * The native format's signature (which bytes are signed) is defined in codec_native.h; the
 * decoder only exposes the signature and the signed bytes, it does not verify them.
 *
 * SenML mapping (details in codec_senml.c): a metric is named by its record's "n" (without
 * "bn"; "bn" alone names a record that has no "n"); its time is bt + t seconds, relative to
 * now_ms when below 2^28 s, so a missing time means now; records with the same resolved
 * time form one reading, in order of first appearance; value = bv + v, or vb as 1/0; the unit
 * ("u", else "bu") goes to tg_metric.unit. SenML readings have no boot/seq. String, data and
 * sum values (vs, vd, s, bs), must-understand labels (ending in '_') and bver > 10 are
 * TG_ERR_UNSUPPORTED; other unknown labels are ignored.
 */
#ifndef TG_CODEC_H
#define TG_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec_rules.h"
#include "error.h"
#include "record.h"

/* Bounds every decode. A zero field means "use the default". */
struct tg_codec_limits {
    size_t max_payload_bytes; /* whole payload; default 4096 */
    unsigned max_metrics;     /* metrics in one reading; default 64 */
    unsigned max_readings;    /* readings (distinct resolved times) in one SenML pack; default 64 */
    unsigned max_name_bytes;  /* metric name or unit, in bytes of UTF-8; default 64 */
    unsigned max_depth;       /* CBOR/JSON nesting, counting the top level as 1; default 8.
                                 Native payloads nest 2 deep; SenML 2 plus ignored extensions */
};

#define TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES 4096
#define TG_CODEC_DEFAULT_MAX_METRICS 64
#define TG_CODEC_DEFAULT_MAX_READINGS 64
/* TG_CODEC_DEFAULT_MAX_NAME_BYTES is in codec_rules.h: the encoder applies it too. */
#define TG_CODEC_DEFAULT_MAX_DEPTH 8

/* The default limits, every field set. */
struct tg_codec_limits tg_codec_limits_default(void);

/* Which payload family to accept. AUTO tells them apart by the first byte; NATIVE and SENML
 * force the family (a payload of the other family is then a type error). JSON versus CBOR is
 * always detected. */
enum tg_format {
    TG_FORMAT_AUTO = 0,
    TG_FORMAT_NATIVE,
    TG_FORMAT_SENML,
};

/* What one decode produced. Every pointer points into the decoder and stays valid until the
 * decoder's next tg_decoder_decode() or tg_decoder_destroy(). */
struct tg_decoded {
    enum tg_format format;          /* TG_FORMAT_NATIVE or TG_FORMAT_SENML */
    bool cbor;                      /* true: CBOR payload; false: JSON */
    size_t n_readings;              /* native: 1; SenML: 1..max_readings */
    const struct tg_reading *readings;
    const uint8_t *sig;             /* TG_SIG_LEN signature bytes, or NULL when unsigned */
    const uint8_t *signed_bytes;    /* the bytes the signature covers (codec_native.h), or NULL */
    size_t signed_len;
};

struct tg_decoder;

/* Creates a decoder bounded by limits (NULL: the defaults; zero fields: their default).
 * Returns NULL when out of memory. Any thread; the decoder then belongs to its caller. */
struct tg_decoder *tg_decoder_new(const struct tg_codec_limits *limits);

/* Frees the decoder and everything its results point to. NULL is a no-op. */
void tg_decoder_destroy(struct tg_decoder *dec);

/* The limits in force (defaults filled in). */
const struct tg_codec_limits *tg_decoder_limits(const struct tg_decoder *dec);

/*
 * Decodes one payload of len bytes sent by device (NUL-terminated id from the MQTT topic,
 * checked with tg_device_id_valid: TG_ERR_BAD_NAME when invalid). now_ms (ms since the Unix
 * epoch) resolves SenML relative times; native payloads carry absolute times and ignore it.
 *
 * On TG_OK *out describes the readings (each carries a copy of device). On error *out is
 * empty and tg_decoder_error() says why. The payload buffer is not retained.
 */
tg_err tg_decoder_decode(struct tg_decoder *dec, enum tg_format format, const char *device,
                         const uint8_t *buf, size_t len, int64_t now_ms, struct tg_decoded *out);

/* Detail text of the last failed tg_decoder_decode() ("" after a success): printable ASCII,
 * at most a couple of hundred bytes, suitable for a DLQ header. Valid until the next call. */
const char *tg_decoder_error(const struct tg_decoder *dec);

/* "native" / "senml" / "auto". Static string. */
const char *tg_codec_format_name(enum tg_format format);

#endif
