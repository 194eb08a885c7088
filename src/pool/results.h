/* What workers send the pool (results.c): their hello and ready, results and runs of a
 * batch's results, read from each worker's channel and filed under its tasks. */
#ifndef PP_RESULTS_H
#define PP_RESULTS_H

#include "pool.h"

/* libuv's read callbacks for a worker's channel. */
void pp__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void pp__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

#endif
