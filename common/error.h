/*
 * error.h - the one error enum of tidegate.
 *
 * Every fallible function returns tg_err. Each code says whether it is retriable (the
 * reading is kept and the operation tried again: a full queue, an unreachable broker) or
 * permanent (the input itself is wrong: the reading is dead-lettered with the code's reason).
 * That distinction drives the store-and-forward path, so it lives here, next to the codes.
 *
 * tg_err_reason() gives a short stable snake_case name used as the `reason` label of metrics
 * and the reason-code header of DLQ records; tg_strerror() gives a sentence for humans.
 * Both are thread-safe and return static strings.
 */
#ifndef TG_ERROR_H
#define TG_ERROR_H

#include <stdbool.h>

typedef enum tg_err {
    TG_OK = 0,

    /* --- retriable: keep the reading, try again later --- */
    TG_ERR_NOMEM,          /* allocation failed */
    TG_ERR_IO,             /* file or socket I/O failed */
    TG_ERR_FULL,           /* a bounded queue or store is full */
    TG_ERR_UNAVAILABLE,    /* a peer (broker, cluster) cannot be reached */
    TG_ERR_TIMEOUT,        /* a deadline passed */

    /* --- permanent: configuration and usage --- */
    TG_ERR_CONFIG,         /* invalid configuration */
    TG_ERR_USAGE,          /* invalid argument or command line */
    TG_ERR_INTERNAL,       /* a broken invariant: a bug */

    /* --- permanent: payload rejections (each one a DLQ reason) --- */
    TG_ERR_TOO_LARGE,      /* payload larger than the configured limit */
    TG_ERR_MALFORMED,      /* not well-formed CBOR / JSON */
    TG_ERR_TRAILING_BYTES, /* bytes after the top-level item */
    TG_ERR_UNKNOWN_FORMAT, /* neither a native payload nor SenML */
    TG_ERR_TOO_DEEP,       /* nesting beyond the format's limit */
    TG_ERR_MISSING_FIELD,  /* a required field is absent */
    TG_ERR_WRONG_TYPE,     /* a field has the wrong type */
    TG_ERR_UNKNOWN_FIELD,  /* a field the format does not define */
    TG_ERR_DUPLICATE_FIELD,/* the same key twice in one map */
    TG_ERR_NON_FINITE,     /* NaN or infinity where a number is required */
    TG_ERR_OUT_OF_RANGE,   /* a number outside its allowed range */
    TG_ERR_TOO_MANY,       /* more metrics or readings than the configured limit */
    TG_ERR_BAD_NAME,       /* empty, too long or invalid metric name or device id */
    TG_ERR_UNSUPPORTED,    /* valid in the format but not supported (e.g. SenML string value) */
    TG_ERR_BAD_SIGNATURE,  /* signature present but wrong, or of the wrong length */
    TG_ERR_UNSIGNED,       /* device requires a signature and the payload has none */
    TG_ERR_CLOCK_SKEW,     /* timestamp too far from the gateway's clock */

    TG_ERR__COUNT
} tg_err;

/* True when the operation may succeed if tried again later (the reading must be kept). */
bool tg_err_retriable(tg_err err);

/* Short stable snake_case name ("malformed", "bad_signature"): metric label and DLQ header. */
const char *tg_err_reason(tg_err err);

/* One human sentence describing the code. */
const char *tg_strerror(tg_err err);

#endif
