/* Hashes every file under a folder with pp_map_stream, and shows the pool at work from
 * its counters: a live progress line on a terminal, plain lines otherwise.
 *
 *   progress FOLDER [WORKERS]
 *
 * The folder is walked lazily, as the pool asks for inputs, so memory stays small
 * whatever its size; the workers read and hash the files (64-bit FNV-1a); the parent
 * only walks, draws and sums up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

/* ---- The worker's task: the file's size and hash --------------------------------------- */

typedef struct digest {
  uint64_t size;
  uint64_t hash;
} digest;

static int hash_file(pp_call *call, const void *arg, size_t len) {
  static unsigned char buf[64 * 1024];
  char path[4096];
  digest d = { 0, 14695981039346656037ull };
  size_t n, i;
  FILE *f;

  if (len == 0 || len >= sizeof(path))
    return pp_fail(call, "hash_file: a path of %zu bytes", len);
  memcpy(path, arg, len);
  path[len] = '\0';
  if ((f = fopen(path, "rb")) == NULL)
    return pp_fail(call, "cannot open %s", path);
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
    for (i = 0; i < n; i++)
      d.hash = (d.hash ^ buf[i]) * 1099511628211ull;
    d.size += n;
  }
  if (ferror(f)) {
    fclose(f);
    return pp_fail(call, "cannot read %s", path);
  }
  fclose(f);
  return pp_reply(call, &d, sizeof(d));
}

static const pp_task tasks[] = { { "hash_file", hash_file }, { NULL, NULL } };

/* ---- The parent: a lazy walk of the folder ---------------------------------------------- */

/* Directories still to read, as a stack of malloc'd paths. */
typedef struct walk {
  char **dirs;
  size_t ndirs, cap;
  uv_fs_t scan;            /* the directory being read, while open */
  char *current;
  int scanning;
  char path[4096];         /* next()'s one buffer: the pool copies it */
  size_t found;            /* files given so far */
  int finished;            /* every directory read */
} walk;

static int walk_push(walk *w, const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + (name ? strlen(name) : 0) + 1;
  char *p;

  if (w->ndirs == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    char **d = realloc(w->dirs, cap * sizeof(*d));
    if (d == NULL)
      return UV_ENOMEM;
    w->dirs = d;
    w->cap = cap;
  }
  if ((p = malloc(n)) == NULL)
    return UV_ENOMEM;
  if (name)
    snprintf(p, n, "%s/%s", dir, name);
  else
    snprintf(p, n, "%s", dir);
  w->dirs[w->ndirs++] = p;
  return 0;
}

/* Gives the next regular file under the folder. Unreadable directories are skipped. */
static int walk_next(walk *w, pp_input *in) {
  uv_dirent_t ent;

  for (;;) {
    if (!w->scanning) {
      if (w->ndirs == 0) {
        w->finished = 1;
        return 0;
      }
      free(w->current);
      w->current = w->dirs[--w->ndirs];
      if (uv_fs_scandir(NULL, &w->scan, w->current, 0, NULL) < 0) {
        uv_fs_req_cleanup(&w->scan);
        continue;
      }
      w->scanning = 1;
    }
    if (uv_fs_scandir_next(&w->scan, &ent) == UV_EOF) {
      uv_fs_req_cleanup(&w->scan);
      w->scanning = 0;
      continue;
    }
    if (ent.type == UV_DIRENT_DIR) {
      if (walk_push(w, w->current, ent.name) != 0)
        return UV_ENOMEM;
    } else if (ent.type == UV_DIRENT_FILE) {
      int n = snprintf(w->path, sizeof(w->path), "%s/%s", w->current, ent.name);
      if (n <= 0 || (size_t) n >= sizeof(w->path))
        continue;
      in->data = w->path;
      in->len = (size_t) n;
      w->found++;
      return 1;
    }
  }
}

/* ---- The parent: outcomes and the progress line ------------------------------------------ */

/* One user pointer serves next() and each(). */
typedef struct progress {
  pp_pool *pool;
  walk *walk;
  int tty;
  uint64_t start, last;    /* uv_hrtime */
  uint64_t bytes;
  uint64_t xor_hash;       /* of every file's hash: one number to compare runs by */
  size_t failures_shown;
} progress;

static void draw(progress *p, int final) {
  pp_pool_stats st;
  double secs = (double) (uv_hrtime() - p->start) / 1e9;
  char line[256];

  pp_pool_stats_get(p->pool, &st);
  snprintf(line, sizeof(line), "%llu of %llu%s files, %.0f files/s, %.1f MiB, "
           "%u workers (%llu lost), %llu failed, %llu running, %llu queued",
           (unsigned long long) st.done, (unsigned long long) p->walk->found,
           p->walk->finished ? "" : "+", secs > 0 ? (double) st.done / secs : 0.0,
           (double) p->bytes / 1048576.0, st.workers_ready,
           (unsigned long long) st.workers_lost, (unsigned long long) st.failed,
           (unsigned long long) st.running, (unsigned long long) st.queued);
  if (p->tty)
    printf("\r\033[K%s%s", line, final ? "\n" : "");
  else
    printf("%s\n", line);
  fflush(stdout);
}

static int next(void *user, pp_input *in) {
  return walk_next(((progress *) user)->walk, in);
}

static void each(void *user, size_t index, pp_result *r) {
  progress *p = (progress *) user;
  uint64_t now = uv_hrtime();
  digest d;

  (void) index;
  if (r->status == 0 && r->len == sizeof(d)) {
    memcpy(&d, r->data, sizeof(d));
    p->bytes += d.size;
    p->xor_hash ^= d.hash;
  } else if (p->failures_shown++ < 5) {
    /* A file that vanished or cannot be read: said once, on a line of its own. */
    if (p->tty)
      printf("\r\033[K");
    printf("  %s\n", r->message ? r->message : pp_strerror(r->status));
  }
  /* A terminal gets ten redraws a second; a log a line a second. */
  if (now - p->last >= (p->tty ? 100000000u : 1000000000u)) {
    p->last = now;
    draw(p, 0);
  }
}

int main(int argc, char **argv) {
  pp_pool_options opts;
  pp_pool *pool;
  progress p;
  walk w;
  int err;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  if (argc < 2) {
    fprintf(stderr, "usage: %s FOLDER [WORKERS]\n", argv[0]);
    return 2;
  }
  pp_pool_options_init(&opts);
  if (argc > 2)
    opts.workers = (unsigned) strtoul(argv[2], NULL, 10);
  if ((err = pp_pool_new(&pool, NULL, &opts)) != 0) {
    fprintf(stderr, "pp_pool_new: %s\n", pp_strerror(err));
    return 1;
  }
  memset(&w, 0, sizeof(w));
  memset(&p, 0, sizeof(p));
  if (walk_push(&w, argv[1], NULL) != 0)
    return 1;
  p.pool = pool;
  p.walk = &w;
  p.tty = uv_guess_handle(1) == UV_TTY;
  p.start = p.last = uv_hrtime();
  printf("hashing every file under %s with %u workers (%s)\n", argv[1],
         pp_pool_workers(pool), pp_start_method_name(pp_pool_start_method(pool)));
  /* Unordered: each file counts as soon as it is hashed. */
  err = pp_map_stream(pool, "hash_file", next, each, &p, PP_MAP_UNORDERED);
  draw(&p, 1);
  printf("%llu bytes, xor of the hashes %016llx%s\n", (unsigned long long) p.bytes,
         (unsigned long long) p.xor_hash,
         err == 0 ? "" : " (some files could not be read)");
  if (w.scanning)
    uv_fs_req_cleanup(&w.scan);
  while (w.ndirs > 0)
    free(w.dirs[--w.ndirs]);
  free(w.dirs);
  free(w.current);
  pp_pool_close(pool, NULL, NULL);
  return err == 0 || err == PP_ETASK ? 0 : 1;
}
