/* What workers send the pool: each worker's byte stream is cut into frames (pp__rx), and
 * each frame is filed under the worker's running task, the first of its list in flight.
 * Anything out of place is the worker breaking the protocol: it is killed and its running
 * task fails with PP_EPROTO. */
#include <stdlib.h>
#include <string.h>

#include "bigmsg.h"
#include "dispatch.h"
#include "journal.h"
#include "lifecycle.h"
#include "results.h"

/* A worker broke the protocol: it is killed, and its task fails with PP_EPROTO. */
static void pp__worker_proto(pp__worker *w, const char *why) {
  pp__task *t = pp__worker_head(w);

  if (!w->became_ready && w->pool->launcher != NULL) {
    /* What came first on a launcher's stdout was not a worker's greeting: a login
     * banner, a message of the day, a shell's start-up output. */
    pp__worker_start_failed(w, PP_ESPAWN,
                            pp__strdupf("the worker launcher '%s' (pid %ld) wrote something "
                                        "other than a procpool worker's greeting on its "
                                        "stdout (%s: a banner or a login message?); it was "
                                        "killed", w->pool->launcher[0], w->pid, why));
  } else if (!w->became_ready) {
    pp__worker_start_failed(w, PP_ESPAWN,
                            pp__strdupf("worker pid %ld sent malformed data while starting "
                                        "(%s); it was killed", w->pid, why));
  } else if (t != NULL) {
    pp__worker_kill(w, PP_EPROTO,
                    pp__strdupf("task '%s' (id %llu) failed: worker pid %ld sent malformed "
                                "data (%s); it was killed", t->name,
                                (unsigned long long) t->id, w->pid, why));
  } else {
    pp__worker_kill(w, 0, NULL);
  }
}

static int pp__on_hello(pp__worker *w, const pp__hdr *hdr, const uint8_t *p, size_t len) {
  pp_pool *pool = w->pool;
  pp__hello h;
  const char *why;
  const uint8_t *name;
  size_t nlen, pos = 0, i;
  int err;

  if (hdr->aux == PP__HELLO_FAILED) {
    /* The worker could not serve, and says why (a malformed task table, say). */
    if (len > PP__MAX_ERRMSG)
      len = PP__MAX_ERRMSG;
    pp__worker_start_failed(w, PP_ESPAWN,
                            pp__strdupf("worker pid %ld cannot serve: %.*s", w->pid,
                                        (int) len, (const char *) p));
    return -1;
  }
  if (pp__hello_decode(p, len, &h, &why) != 0) {
    pp__worker_proto(w, why);
    return -1;
  }
  w->got_hello = 1;
  /* A method that learns the pid late (the forkserver) may not know it yet. */
  if (w->pid <= 0)
    w->pid = (long) h.pid;
  if (pool->names == NULL) {
    /* A worker_executable and no table in this process: the first worker's table is
     * the pool's. */
    pool->names = calloc((size_t) h.ntasks + 1, sizeof(*pool->names));
    if (pool->names == NULL) {
      pp__worker_proto(w, "out of memory");
      return -1;
    }
    pool->names_owned = 1;
    for (i = 0; i < h.ntasks; i++) {
      char *s;
      pp__hello_name(&h, &pos, &name, &nlen);
      s = malloc(nlen + 1);
      if (s == NULL) {
        pp__worker_proto(w, "out of memory");
        return -1;
      }
      memcpy(s, name, nlen);
      s[nlen] = '\0';
      pool->names[i] = s;
      pool->ntasks = i + 1;
    }
    err = pp__names_init(&pool->index, pool->names, pool->ntasks, NULL, NULL);
    if (err != 0) {
      pp__worker_proto(w, err == PP_ENOMEM ? "out of memory"
                                           : "its task table has two tasks of one name");
      return -1;
    }
    return 0;
  }
  if (h.ntasks != pool->ntasks)
    goto differs;
  for (i = 0; i < h.ntasks; i++) {
    pp__hello_name(&h, &pos, &name, &nlen);
    if (strlen(pool->names[i]) != nlen || memcmp(pool->names[i], name, nlen) != 0)
      goto differs;
  }
  return 0;

differs:
  pp__worker_proto(w, "its task table differs from this program's: is the worker "
                      "program built from the same sources?");
  return -1;
}

static void pp__on_ready(pp__worker *w, const pp__hdr *h, const uint8_t *p) {
  pp_pool *pool = w->pool;

  if (h->aux != PP__R_OK) {
    pp__worker_start_failed(w, h->aux == PP__R_NOTASK ? PP_ENOTASK : PP_EINIT,
                            pp__strdupf("the initializer '%s' failed in worker pid %ld: "
                                        "%.*s", pool->initializer ? pool->initializer
                                                                  : "(none)",
                                        w->pid, (int) h->len, (const char *) p));
    return;
  }
  pp__worker_ready(w);
}

/* The worker's running task has all its results: the next one starts running. */
static void pp__worker_pop(pp__worker *w, pp__task *t) {
  pp_pool *pool = w->pool;
  uint64_t now = uv_hrtime();
  pp__task *next;

  pp__worker_detach(w, t);
  /* A batch's time is shared among its items, so that the depth suits what they cost. */
  pool->avg_ns = pool->timed++ ? (pool->avg_ns * 7 + (now - w->head_since) /
                                  (t->nitems ? t->nitems : 1)) / 8
                               : now - w->head_since;
  w->head_since = now;
  pp__worker_arm_task_timer(w);
  /* The next is a task canceled while it waited here: its turn has come, and the worker
   * would run it for no one, holding up what is behind it (for ever, if it hangs). It is
   * stopped as a running task is: the worker is killed, read to its end, replaced. */
  next = pp__worker_head(w);
  if (w->state == PP__W_READY && next != NULL && next->state == PP__T_DONE) {
    pp__worker_abort_head(w, 0, NULL);
    return;
  }
  /* Only a READY worker takes more: one that is ENDING gives its last results. */
  if (w->state == PP__W_READY && w->ninflight == 0 && !w->unwritable) {
    if (pool->max_tasks != 0 && w->assigned >= pool->max_tasks)
      pp__worker_retire(w);
    else
      pp__worker_set_idle(w, 1);
  }
}

/* A run of a batch's results, for the worker's running task. */
static void pp__on_batch_result(pp__worker *w, const pp__hdr *h, const uint8_t *p) {
  pp_pool *pool = w->pool;
  pp__task *t = pp__worker_head(w);
  const char *why;
  pp__batch b;

  if (t == NULL || t->id != h->id || t->nitems == 0) {
    pp__worker_proto(w, "a batch result for a task it was not given");
    return;
  }
  if (pp__batch_result_decode(p, h->len, &b, &why) != 0) {
    pp__worker_proto(w, why);
    return;
  }
  if (b.first != t->received || b.count > t->nitems - t->received) {
    pp__worker_proto(w, "a batch result out of order");
    return;
  }
  t->received += b.count;
  if (t->state != PP__T_DONE)
    t->on_items(t, &b, w->pid);
  if (t->received < t->nitems)
    return;
  pp__worker_pop(w, t);
  if (t->state == PP__T_DONE) {
    pool->dropped++;
    pp__task_free(t);
  } else {
    pp__task_finish(t, 0, NULL, 0, NULL);
  }
  pp__pump(pool);
}

/* A result for the worker's running task, the first in flight. data is malloc'd when
 * owned, else it points into the reader's buffer and is copied. A result in shared memory
 * (PP__FL_SHM) is copied out of its segment, which goes back to the worker. */
static void pp__on_result(pp__worker *w, const pp__hdr *h, uint8_t *data, int owned) {
  pp_pool *pool = w->pool;
  pp__task *t = pp__worker_head(w);
  int status, shm_err = 0;
  void *copy = NULL;
  size_t copy_len = h->len;
  const char *bad = NULL, *shm_why = NULL;

  if (t == NULL || t->id != h->id)
    bad = "a result for a task it was not given";
  else if (t->nitems != 0)
    bad = "a single result for a batch";
  switch (h->aux) {
    case PP__R_OK: status = 0; break;
    case PP__R_FAIL: status = PP_ETASK; break;
    case PP__R_NOTASK: status = PP_ENOTASK; break;
    case PP__R_TOOBIG: status = PP_E2BIG; break;
    default: status = 0; bad = bad ? bad : "a result of an unknown kind"; break;
  }
  if (bad == NULL && status != 0 && h->len > PP__MAX_ERRMSG)
    bad = "an error message over the size limit";
  if (bad == NULL && (h->flags & PP__FL_SHM) != 0) {
    /* Read (or, for a task decided already, only given back) before the task leaves the
     * worker, which frees its argument's segment. */
    shm_err = pp__bigmsg_result(w, t, data, h->len, t->state == PP__T_DONE ? NULL : &copy,
                                &copy_len, &shm_why);
    if (shm_err == PP_EPROTO)
      bad = shm_why;
  }
  if (bad != NULL) {
    if (owned)
      free(data);
    pp__worker_proto(w, bad);
    return;
  }
  pp__worker_pop(w, t);

  if (t->state == PP__T_DONE) {
    /* Decided already (canceled while it waited in the worker): the result is dropped. */
    pool->dropped++;
    pp__task_free(t);
  } else if ((h->flags & PP__FL_SHM) != 0) {
    if (shm_err == 0)
      pp__task_finish(t, 0, copy, copy_len, NULL);
    else
      pp__task_fail(t, shm_err, "task '%s' (id %llu): its result of %lu bytes in shared "
                    "memory could not be read: %s: %s (%s)", t->name,
                    (unsigned long long) t->id, (unsigned long) copy_len, shm_why,
                    pp_strerror(shm_err), pp_errname(shm_err));
  } else if (status == 0) {
    /* Large, and it came over the channel: the next may come through shared memory. */
    pp__bigmsg_offer(w, h->len);
    if (h->len > 0) {
      if (owned) {
        copy = data;
        owned = 0;
      } else if ((copy = malloc(h->len)) != NULL) {
        memcpy(copy, data, h->len);
      } else {
        status = PP_ENOMEM;
      }
    }
    if (status == 0) {
      pp__task_finish(t, 0, copy, h->len, NULL);
    } else {
      pp__task_fail(t, status, "task '%s' (id %llu): no memory for its result of %lu bytes",
                    t->name, (unsigned long long) t->id, (unsigned long) h->len);
    }
  } else if (status == PP_ETASK) {
    pp__task_fail(t, status, "task '%s' (id %llu) failed in worker pid %ld: %.*s", t->name,
                  (unsigned long long) t->id, w->pid, (int) h->len, (const char *) data);
  } else {
    pp__task_fail(t, status, "task '%s' (id %llu): %.*s", t->name,
                  (unsigned long long) t->id, (int) h->len, (const char *) data);
  }
  if (owned)
    free(data);
  pp__pump(pool);
}

/* The worker could not map a large argument's segment: it ran nothing of that task and
 * starts nothing more. It is let go as a worker over max_worker_memory is, so that the
 * task and those behind it run elsewhere, and the pool sends its large messages over
 * the channels from now on. */
static void pp__on_shm_failed(pp__worker *w, const pp__hdr *h, const uint8_t *p) {
  static int warned;
  pp__task *t = pp__worker_head(w);

  if (t == NULL || t->id != h->id) {
    pp__worker_proto(w, "a shared-memory failure for a task it was not given");
    return;
  }
  w->pool->shm_off = 1;
  pp__warn_once(&warned, "worker pid %ld could not map a large argument's shared memory "
                "(%.*s); the pool sends its large messages over the workers' channels "
                "from now on", w->pid, (int) h->len, (const char *) p);
  w->said_retire = 1;
  if (w->state == PP__W_READY)
    pp__worker_retire(w);
}

/* Handles one whole frame. Returns 0 to go on reading, -1 when the worker was let go. */
static int pp__on_frame(void *ctx, const pp__hdr *h, uint8_t *p, int owned) {
  pp__worker *w = (pp__worker *) ctx;
  int err = 0;

  if (!pp__worker_live(w)) {
    if (owned)
      free(p);
    return -1;
  }
  if (!w->got_hello) {
    if (h->type != PP__F_HELLO)
      pp__worker_proto(w, "its first frame is not a hello (is it a procpool program?)");
    else
      err = pp__on_hello(w, h, p, h->len);
  } else if (h->type == PP__F_READY && !w->became_ready) {
    /* One that ended meanwhile is a failed start all the same: its end decides. */
    if (w->state == PP__W_STARTING)
      pp__on_ready(w, h, p);
  } else if (h->type == PP__F_RESULT && w->became_ready) {
    pp__on_result(w, h, p, owned);
    owned = 0;
  } else if (h->type == PP__F_BATCH_RESULT && w->became_ready) {
    pp__on_batch_result(w, h, p);
  } else if (h->type == PP__F_SHM_FAILED && w->became_ready) {
    pp__on_shm_failed(w, h, p);
  } else if (h->type == PP__F_JOURNAL_FAILED) {
    /* It may come before READY: the journal is handed over ahead of INIT. */
    w->journal_failed = 1;
  } else if (h->type == PP__F_RETIRE && w->became_ready) {
    /* Over max_worker_memory after the task whose result came just before: it starts
     * nothing more, so what it holds behind that task goes elsewhere, and it is let go
     * as max_tasks_per_worker lets a worker go. A worker being ended already (a kill
     * claimed for a cancel, read to its end) only says so: its settle then knows. */
    w->said_retire = 1;
    if (w->state == PP__W_READY)
      pp__worker_retire(w);
  } else {
    pp__worker_proto(w, "a frame out of order");
  }
  if (owned)
    free(p);
  return err != 0 || !pp__worker_live(w) ? -1 : 0;
}

void pp__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  pp__worker *w = (pp__worker *) h->data;
  uint8_t *base;
  size_t len;

  (void) suggested;
  pp__rx_space(&w->rx, &base, &len);
  *buf = uv_buf_init((char *) base, (unsigned int) len);
}

void pp__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pp__worker *w = (pp__worker *) s->data;
  const char *why = NULL;
  int err;

  (void) buf;
  if (nread < 0) {
    pp__worker_on_eof(w);
    return;
  }
  if (nread == 0 || !pp__worker_live(w))
    return;
  pp__worker_progress(w);
  err = pp__rx_feed(&w->rx, (size_t) nread, pp__on_frame, w, &why);
  if (!pp__worker_live(w))
    return;
  if (err == PP_EPROTO)
    pp__worker_proto(w, why);
  else if (err == PP_ENOMEM)
    pp__worker_proto(w, "no memory for a large result");
}
