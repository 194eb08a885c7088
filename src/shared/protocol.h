/* The wire protocol between a pool and its workers: length-prefixed binary frames, all
 * integers little-endian. doc/protocol.md is the reference; this is its one
 * implementation. Every decoder here checks bounds and returns PP_EPROTO with a static
 * reason, never reads past what it was given, and allocates nothing. */
#ifndef PP_PROTOCOL_H
#define PP_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

/* 2: large messages through shared memory (the SHM flag, INIT's transport fields,
 * SHM_FAILED). 3: segments are anonymous and come as descriptors or handles with the
 * JOURNAL and SHM_OFFER frames that introduce them (seg.h); no frame names one. */
#define PP__PROTO_VERSION 3
#define PP__PROTO_MAGIC 0x57525050u /* "PPRW" read as little-endian bytes */
#define PP__HDR_SIZE 16

/* Hard limits that hold whatever the pool's options say. */
#define PP__MAX_NAME 255
#define PP__MAX_TASKS 65535
#define PP__MAX_ERRMSG 4096          /* bytes of an error message on the wire */
/* 4 GiB - 1 MiB, as the header says: the 1 MiB left under a frame's 32-bit length holds
 * any header that goes with a payload. */
#define PP__MAX_MESSAGE_LIMIT ((size_t) UINT32_MAX - (1u << 20) + 1)

enum pp__frame_type {
  PP__F_HELLO = 1,  /* worker -> pool: first frame: magic, version, pid, task names; or,
                     * aux PP__HELLO_FAILED, why it cannot serve */
  PP__F_INIT = 2,   /* pool -> worker: limits, initializer name and argument */
  PP__F_READY = 3,  /* worker -> pool: aux 0: ready; aux 1: initializer failed, payload msg */
  PP__F_TASK = 4,   /* pool -> worker: aux task index, id, payload the argument */
  PP__F_RESULT = 5, /* worker -> pool: aux a pp__result_kind, id, payload data or message */
  PP__F_BATCH = 6,  /* pool -> worker: aux task index, id; payload a batch of arguments */
  PP__F_BATCH_RESULT = 7, /* worker -> pool: id; payload results of a run of the batch */
  PP__F_JOURNAL = 8, /* pool -> worker: the segment for its results journal and control
                      * words (journal.h), before or after INIT */
  PP__F_JOURNAL_FAILED = 9, /* worker -> pool: it could not map the journal, and goes on
                             * without it (no payload) */
  PP__F_RETIRE = 10,        /* worker -> pool, after a result: it is over the pool's
                             * max_worker_memory and starts nothing more; payload u64 its
                             * resident bytes */
  PP__F_SHM_FAILED = 11,    /* worker -> pool: it could not map the shared memory of the
                             * TASK `id`, did not run it, and starts nothing more; payload
                             * why */
  PP__F_SHM_OFFER = 12      /* pool -> worker: a segment for its large messages, aux a
                             * pp__seg_kind; payload a pp__shm_task (len 0) */
};

/* The header's flags. PP__FL_SHM: the frame's bytes are in shared memory, and its payload
 * says where (a TASK's argument: pp__shm_task; a RESULT of kind OK: pp__shm_result). */
#define PP__FL_SHM 1

/* How many segments the pool keeps per worker for the transport, for arguments and for
 * results each. All are the pool's: it makes them, and they outlive the worker that
 * wrote in them (on Windows a segment ends with the last handle to it). */
#define PP__SHM_SLOTS 4
/* A result segment starts with this header: u32 `busy` (1 from the worker's write of a
 * result to the pool's release of it, in the machine's byte order), then zero. */
#define PP__SHM_RESULT_HDR 64
/* What an SHM_OFFER's segment is for: the slot's arguments (the pool writes, then sends
 * TASK frames that point into it) or its results (the worker writes). */
enum pp__seg_kind { PP__SEG_RESULT = 0, PP__SEG_ARG = 1 };

/* A TASK's argument in the pool's segment of that slot, or (SHM_OFFER, len 0) the
 * segment for a slot: u32 slot, u32 zero, u64 the segment's size, u64 the argument's
 * length (at the segment's start), u64 the token (seg.h: on Windows the segment's handle
 * in the worker; 0 elsewhere and in a TASK). */
#define PP__SHM_TASK_SIZE 32
#define PP__SHM_TASK_TOKEN 24
typedef struct pp__shm_task {
  uint32_t slot;
  uint64_t size;
  uint64_t len;
  uint64_t token;
} pp__shm_task;
int pp__shm_task_decode(const uint8_t *p, size_t len, pp__shm_task *out, const char **why);
void pp__shm_task_encode(uint8_t out[PP__SHM_TASK_SIZE], const pp__shm_task *in);

/* A RESULT's bytes in shared memory: u32 where (0: the task's own argument segment; k + 1:
 * the result segment the pool offered in slot k), u32 zero, u64 the segment's size, u64
 * the offset of the result in it, u64 the result's length. */
#define PP__SHM_RESULT_SIZE 32
typedef struct pp__shm_result {
  uint32_t where;
  uint64_t size;
  uint64_t off;
  uint64_t len;
} pp__shm_result;
int pp__shm_result_decode(const uint8_t *p, size_t len, pp__shm_result *out,
                          const char **why);
void pp__shm_result_encode(uint8_t out[PP__SHM_RESULT_SIZE], const pp__shm_result *in);

/* A HELLO's aux. PP__HELLO_FAILED is a worker that cannot serve (pp_main found its task
 * table malformed): the payload is its message, at most PP__MAX_ERRMSG bytes, not a
 * greeting, and the worker exits with PP__EXIT_SETUP. The pool reports a failed start. */
enum pp__hello_kind {
  PP__HELLO_OK = 0,
  PP__HELLO_FAILED = 1
};

/* A batch (pp_map's items, many per frame): u32 count, count u32 lengths, then the
 * arguments end to end. Its results come in BATCH_RESULT frames, each for the next run of
 * items: u32 first, u32 count, count pairs of u32 kind and u32 length, then the results
 * (or messages) end to end, in runs as long as its journal holds (journal.h); without
 * a journal, one per item, before it starts the next. */
#define PP__BATCH_MAX 4096
#define PP__BATCH_SLACK (8 + 8 * PP__BATCH_MAX)
/* The fixed form of both (pp_map_array's items, and a run of results that all succeeded
 * with one size): the count word has this bit set, a u32 size and a u32 (BATCH: u64) zero
 * follow, then count items of that size end to end, 16-byte aligned, with no table. */
#define PP__BATCH_FIXED 0x80000000u
#define PP__BATCH_FIXED_HDR 16

enum pp__result_kind {
  PP__R_OK = 0,      /* payload: the result bytes */
  PP__R_FAIL = 1,    /* payload: the task's message (PP_ETASK) */
  PP__R_NOTASK = 2,  /* payload: message (PP_ENOTASK) */
  PP__R_TOOBIG = 3   /* payload: message (PP_E2BIG) */
};

/* JOURNAL payload: u64 the size of the worker's journal segment, u64 its token (as a
 * pp__shm_task's). PP_EPROTO with why when malformed. */
#define PP__JOURNAL_FRAME 16
#define PP__JOURNAL_TOKEN 8
int pp__journal_decode(const uint8_t *p, size_t len, uint64_t *size, uint64_t *token,
                       const char **why);

/* Walks a batch's arguments (worker side) or a batch result's items (pool side). Each
 * returns 0 or PP_EPROTO with why; both check every length against the frame. */
typedef struct pp__batch {
  uint32_t first;          /* results only */
  uint32_t count;
  const uint8_t *table;    /* count lengths, or count (kind, length) pairs; NULL: fixed */
  uint32_t size;           /* fixed: every item's length (in a result, every one a success) */
  const uint8_t *data;
  size_t data_len;
} pp__batch;

int pp__batch_decode(const uint8_t *p, size_t len, pp__batch *b, const char **why);
int pp__batch_result_decode(const uint8_t *p, size_t len, pp__batch *b, const char **why);

typedef struct pp__hdr {
  uint32_t len;   /* payload bytes after the header */
  uint8_t type;
  uint8_t flags;  /* 0 in version 1 */
  uint16_t aux;
  uint64_t id;
} pp__hdr;

void pp__put_u16(uint8_t *p, uint16_t v);
void pp__put_u32(uint8_t *p, uint32_t v);
void pp__put_u64(uint8_t *p, uint64_t v);
uint16_t pp__get_u16(const uint8_t *p);
uint32_t pp__get_u32(const uint8_t *p);
uint64_t pp__get_u64(const uint8_t *p);

void pp__hdr_encode(uint8_t out[PP__HDR_SIZE], uint8_t type, uint16_t aux, uint64_t id,
                    uint32_t len);
void pp__hdr_decode(const uint8_t in[PP__HDR_SIZE], pp__hdr *h);
/* Sets the flags of an encoded header. */
void pp__hdr_set_flags(uint8_t out[PP__HDR_SIZE], uint8_t flags);

/* Checks a header that a worker sent to the pool: a known type, zero flags, a length
 * within the limit for its type. max_message is the pool's max_message_bytes. */
int pp__hdr_check_from_worker(const pp__hdr *h, size_t max_message, const char **why);

/* HELLO payload: magic u32, version u16, ntasks u16, pid u32, then ntasks names, each a
 * u8 length and that many bytes. */
size_t pp__hello_size(const char *const *names, size_t ntasks);
void pp__hello_encode(uint8_t *out, uint32_t pid, const char *const *names, size_t ntasks);

typedef struct pp__hello {
  uint16_t version;
  uint16_t ntasks;
  uint32_t pid;
  const uint8_t *names;     /* the packed names, to walk with pp__hello_name */
  size_t names_len;
} pp__hello;

int pp__hello_decode(const uint8_t *p, size_t len, pp__hello *out, const char **why);
/* Walks the names of a decoded HELLO: *pos starts at 0; returns 0 and sets *name and *nlen,
 * or PP_EPROTO past the end or on a truncated entry. */
int pp__hello_name(const pp__hello *h, size_t *pos, const uint8_t **name, size_t *nlen);

/* The pool's reader of a worker's byte stream. Small frames are parsed out of one
 * buffer, many per read; a payload too large for it is read straight into a block of
 * its own, which the frame callback then owns, so a large result is never copied. */
#define PP__RX_CAP (64 * 1024)

typedef struct pp__rx {
  uint8_t *buf;            /* PP__RX_CAP bytes */
  size_t len;
  size_t max_message;
  uint8_t big_hdr[PP__HDR_SIZE];
  uint8_t *big;
  size_t big_len;
  size_t big_got;
} pp__rx;

/* Called for each whole frame, in order. The payload is malloc'd and the callback's to
 * free when owned, else borrowed for the call. A non-zero return stops the reader. */
typedef int (*pp__frame_cb)(void *ctx, const pp__hdr *h, uint8_t *payload, int owned);

int pp__rx_init(pp__rx *rx, size_t max_message);
void pp__rx_free(pp__rx *rx);
/* Where the next bytes go, and how many fit. */
void pp__rx_space(pp__rx *rx, uint8_t **base, size_t *len);
/* Takes n bytes just written at the space. Returns 0; PP_EPROTO with *why for a malformed
 * header (the reader is then unusable); PP_ENOMEM; or the callback's non-zero value. */
int pp__rx_feed(pp__rx *rx, size_t n, pp__frame_cb cb, void *ctx, const char **why);

/* INIT payload: version u16, flags u16, max_message u64; with flag PP__INIT_MEMCAP a u64
 * max_worker_memory; with flag PP__INIT_SHM the transport's u64 threshold; then the
 * initializer's name as a u8 length (0: none) and bytes, then the initializer's argument
 * to the end. */
#define PP__INIT_FIXED 13
#define PP__INIT_MEMCAP 1
#define PP__INIT_SHM 2
typedef struct pp__init {
  uint16_t version;
  uint64_t max_message;
  uint64_t max_memory;      /* 0: none */
  uint64_t shm_threshold;   /* 0: no transport; else results this large may use it */
  const char *initializer;  /* not NUL-terminated; NULL when none */
  size_t initializer_len;
  const uint8_t *initarg;
  size_t initarg_len;
} pp__init;

int pp__init_decode(const uint8_t *p, size_t len, pp__init *out, const char **why);
/* The payload's size for in (version ignored: ours), and with out not NULL its bytes. */
size_t pp__init_encode(uint8_t *out, const pp__init *in);

#endif
