/*
 * storage_probe.c - the node's storage size for a typical configuration, measured with the
 * target's own type sizes and alignment. Compiled (never linked or run) by footprint.sh: the
 * size of the array below is tg_node_storage_size() for FOOTPRINT_SLOTS readings of
 * FOOTPRINT_PAYLOAD_BYTES, read back from the object file with nm.
 *
 * It includes the core's sources to see their private structs, and uses the very macros
 * tg_node_storage_size() is computed with (NODE_HEADER_BYTES, OUTBOX_BYTES), so the figure
 * cannot drift from the code.
 */
#include "../core/node.c"
#include "../core/outbox.c"

#ifndef FOOTPRINT_SLOTS
#define FOOTPRINT_SLOTS 16
#endif
#ifndef FOOTPRINT_PAYLOAD_BYTES
#define FOOTPRINT_PAYLOAD_BYTES 256
#endif

extern const char tg_footprint_storage[];
const char tg_footprint_storage[NODE_HEADER_BYTES +
                                OUTBOX_BYTES(FOOTPRINT_SLOTS, FOOTPRINT_PAYLOAD_BYTES)] = {0};
extern const char tg_footprint_node_header[];
const char tg_footprint_node_header[NODE_HEADER_BYTES] = {0};
