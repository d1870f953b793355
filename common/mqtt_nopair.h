/*
 * mqtt_nopair.h - libmosquitto clients without their wake-up socketpair.
 *
 * libmosquitto 2.0 opens a Unix socketpair for each client (in mosquitto_new/_reinitialise and
 * when it connects) and writes one byte to it for every packet it queues, to wake the select()
 * of its own threaded loop (mosquitto_loop_start). A client driven by our own poll loop never
 * reads that pair, so it costs two descriptors per client, one write(2) per packet (for the
 * gateway: per PUBACK, i.e. per message received) and, once the pair's buffer is full, a
 * failing write per packet forever. libmosquitto treats a failing socketpair() as "no wake-up
 * pipe" and carries on, which is what a non-threaded client needs.
 *
 * So between tg_mqtt_nopair_begin() and _end(), socketpair(AF_UNIX, ...) fails on the calling
 * thread; at any other time and on every other thread it is the system call. Bracket every
 * mosquitto_new, mosquitto_reinitialise and mosquitto_connect*() of a client that is never
 * given to mosquitto_loop_start().
 */
#ifndef TG_MQTT_NOPAIR_H
#define TG_MQTT_NOPAIR_H

void tg_mqtt_nopair_begin(void);
void tg_mqtt_nopair_end(void);

#endif
