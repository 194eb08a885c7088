/* The one list of tests. The C code expands it (test.h declares test_<name>, run-tests.c
 * dispatches on it) and test/meson.build reads it line by line to make the meson tests,
 * so a test cannot exist in one and not the other.
 *
 *   TEST_EACH(name): once per start method; meson names it name-spawn, name-fork and
 *     name-forkserver (dashes for underscores) and runs `run-tests name method`.
 *   TEST_ONCE(name): independent of the method; `run-tests name`.
 *
 * One entry per line, alone on it: meson rejects any other line that starts with TEST_.
 * No include guard: test.h and run-tests.c each expand it with their own definitions. */

/* Round trips and results (test-basic.c) */
TEST_EACH(roundtrip)
TEST_EACH(empty)
TEST_EACH(big_arg)
TEST_EACH(map_order)
TEST_EACH(map_failures)
TEST_EACH(submit_callbacks)
TEST_EACH(unknown_task)
TEST_EACH(task_fail)
TEST_EACH(fail_truncated)
TEST_EACH(task_nonzero)
TEST_EACH(worker_api_misuse)
TEST_EACH(submit_in_worker)
TEST_EACH(e2big_arg)
TEST_EACH(e2big_result)
TEST_EACH(runs_once)
TEST_EACH(stress)
TEST_EACH(recycle_stress)
TEST_EACH(workers_64)
TEST_EACH(worker_executable)

/* Initializers and worker state (test-init.c) */
TEST_EACH(initializer)
TEST_EACH(init_fails)
TEST_EACH(init_unknown)
TEST_EACH(max_tasks)
TEST_ONCE(spawn_global)

/* Workers that misbehave (test-faults.c) */
TEST_EACH(crash_abort)
TEST_EACH(crash_segv)
TEST_EACH(exit_code)
TEST_EACH(crash_burst)
TEST_EACH(killed_externally)
TEST_EACH(timeout)
TEST_EACH(hang_before_main)
TEST_EACH(exit_before_main)
TEST_EACH(missing_exe)
TEST_EACH(not_procpool)
TEST_EACH(parent_death)
TEST_EACH(parent_death_busy)
TEST_EACH(parent_death_thread)
TEST_EACH(foreign_child)
TEST_EACH(worker_fds)

/* Cancel, close, terminate, callbacks, loops (test-lifecycle.c) */
TEST_EACH(cancel_queued)
TEST_EACH(cancel_running)
TEST_EACH(cancel_unknown)
TEST_EACH(close_drains)
TEST_EACH(caller_loop)
TEST_EACH(submit_after_close)
TEST_EACH(terminate)
TEST_EACH(terminate_private)
TEST_EACH(terminate_during_close)
TEST_EACH(close_then_terminate)
TEST_EACH(pipeline_one)
TEST_EACH(callback_blocking_caller)
TEST_EACH(callback_blocking_private)
TEST_EACH(callback_reentry)
TEST_EACH(thread_exit)

/* The API's contract without workers, or nearly (test-api.c) */
TEST_ONCE(errors)
TEST_ONCE(method_names)
TEST_ONCE(result_free)
TEST_ONCE(defaults)
TEST_ONCE(options_invalid)
TEST_ONCE(initarg_too_big)
TEST_ONCE(api_null)
TEST_ONCE(pp_main_invalid)
TEST_ONCE(start_method_env)
TEST_ONCE(start_method_bogus)
TEST_ONCE(start_method_default)
TEST_ONCE(start_method_unsupported)
TEST_ONCE(sigpipe_default)
TEST_ONCE(sigpipe_handler)

/* What a worker sees under each start method: the README's table (test-matrix.c) */
TEST_EACH(matrix)
TEST_ONCE(matrix_env_spawn)
TEST_ONCE(fork_busy_parent)
TEST_EACH(worker_signals)

/* Shared memory segments (test-shm.c) */
TEST_ONCE(shm_basic)
TEST_ONCE(shm_open_after_close)
TEST_ONCE(shm_invalid)
TEST_EACH(shm_roundtrip)
TEST_EACH(shm_from_worker)
TEST_EACH(shm_worker_crash)
TEST_EACH(shm_fork_inherited)

/* Pipelining and pp_map's batches (test-pipeline.c) */
TEST_EACH(pipeline_mid_args)
TEST_EACH(map_batches)

/* Thousands of tasks while workers are killed from outside (test-kill-stress.c) */
TEST_EACH(kill_stress)

/* Workers that send malformed frames (test-proto.c) */
TEST_EACH(proto_bad_type)
TEST_EACH(proto_bad_flags)
TEST_EACH(proto_bad_length)
TEST_EACH(proto_bad_id)
TEST_EACH(proto_bad_kind)
TEST_EACH(proto_late_hello)
TEST_EACH(proto_bad_shm)

/* A program in a path with spaces and non-ASCII characters (test-paths.c) */
TEST_EACH(odd_path)

/* Issue 17's defects in the core, one regression test each (test-core.c) */
TEST_EACH(close_worker_dies)
TEST_EACH(close_worker_retires)
TEST_EACH(close_worker_times_out)
TEST_EACH(close_starts_all)
TEST_EACH(eof_without_exit)
TEST_EACH(pipelined_crash_once)
TEST_EACH(timeout_loop_time)
TEST_EACH(map_bad_items)
TEST_EACH(apply_cancel_sent_ahead)
TEST_EACH(cancel_cb_terminates)
TEST_EACH(terminate_cb_cancels)
TEST_EACH(cancel_ahead_hang)
TEST_EACH(cancel_no_bystander)
TEST_EACH(worker_parent_pool)
TEST_ONCE(env_method_long)
TEST_EACH(relative_exe_chdir)

/* The forkserver's failure paths and what forked workers hold (test-forkserver.c) */
TEST_ONCE(fs_conn_refused)
TEST_ONCE(fs_server_stopped)
TEST_ONCE(fs_server_killed)
TEST_EACH(stdio_follows)
TEST_EACH(fds_above_limit)

/* The worker side of the protocol: a batch's results item by item, the initializer's
 * aligned argument, big and malformed task tables (test-worker.c) */
TEST_EACH(map_crash_runs_once)
TEST_EACH(init_arg_aligned)
TEST_EACH(big_table)
TEST_ONCE(names_index)
TEST_ONCE(table_refused)
TEST_ONCE(worker_bad_table)

/* The Unix spawn path without fork: bad programs, descriptors without close-on-exec,
 * signals, a threaded parent (test-spawnpath.c) */
TEST_EACH(sp_missing_exe)
TEST_EACH(sp_not_executable)
TEST_EACH(sp_fd_no_cloexec)
TEST_EACH(sp_signals)
TEST_EACH(sp_threaded_parent)
TEST_ONCE(sp_fs_kept)

/* The results journal: a batch's finished items run once when its worker dies in the
 * middle of it, whatever their results' sizes; names removed; the reader (test-journal.c) */
TEST_EACH(journal_crash_mid_batch)
TEST_EACH(journal_sigkill_mid_batch)
TEST_EACH(journal_result_sizes)
TEST_EACH(journal_run_limit)
TEST_EACH(journal_name_removed)
TEST_ONCE(journal_read_untrusted)

/* Windows: what a spawned worker inherits, the job that ends it, how its end is told
 * (test-windows.c) */
TEST_ONCE(win_inherited_pipe)
TEST_ONCE(win_inherited_file)
TEST_ONCE(win_two_threads)
TEST_ONCE(win_job)
TEST_ONCE(win_exception_code)
TEST_ONCE(win_exit_process)
TEST_ONCE(win_bad_channel)

/* Windows as its users get it: the static library inside an application's DLL, workers
 * that cannot escape a dying parent, a worker's whole tree ended through a launcher,
 * path forms, cmd.exe's special characters (test-win2.c) */
TEST_ONCE(win_static_in_dll)
TEST_ONCE(win_parent_dies_starting)
TEST_ONCE(win_parent_dies_starting_nojl)
TEST_ONCE(win_launcher_kills_tree)
TEST_ONCE(win_path_forms)
TEST_ONCE(win_not_a_program)
TEST_ONCE(win_launcher_cmd_chars)

/* Streams and the pool's counters: ordered and unordered delivery, next() ending and
 * failing, failures and dead workers mid-stream, the bounded window, misuse, the counters
 * under faults (test-stream.c) */
TEST_EACH(stream_ordered)
TEST_EACH(stream_unordered)
TEST_EACH(stream_next_stops)
TEST_EACH(stream_failures)
TEST_EACH(stream_worker_killed)
TEST_EACH(stream_window_bounded)
TEST_EACH(stream_api)
TEST_EACH(stream_counters_faults)
/* Random sequences of the API's calls checked against the header (test-model.c) */
TEST_EACH(model_private)
TEST_EACH(model_caller_loop)

/* test-threads.c: pools from several threads, and futures */
TEST_EACH(thr_futures_many)
TEST_EACH(thr_blocking_calls)
TEST_EACH(thr_close_under_waiters)
TEST_EACH(thr_terminate_under_waiters)
TEST_EACH(thr_future_outlives_pool)
TEST_EACH(thr_caller_loop)
TEST_EACH(thr_wait_in_callback)
TEST_EACH(thr_no_thread_until_needed)
TEST_EACH(thr_pools_in_parallel)

/* Any thread, safely: re-entrancy and lifetimes of the cross-thread layer (test-xthreads.c) */
TEST_EACH(xt_each_cancel_terminate)
TEST_EACH(xt_no_drain_in_callback)
TEST_EACH(xt_late_calls)
TEST_EACH(xt_cross_pool_callbacks)
TEST_EACH(xt_close_stream_kill)

/* The fork method's helper: replacements copy the parent as it was at pp_pool_new, a
 * lock taken later is free in workers, one helper per pool, reaped with it, a helper
 * killed under its pool (test-forkhelper.c) */
TEST_ONCE(fh_replacement_snapshot)
TEST_ONCE(fh_lock_later)
TEST_ONCE(fh_one_per_pool)
TEST_ONCE(fh_helper_killed)

/* max_worker_memory: leaking workers recycled, nothing failed (test-memcap.c) */
TEST_EACH(memcap_recycles)
TEST_EACH(memcap_sent_ahead)
/* test-launcher.c: workers started through a launcher (worker_launcher) over their stdin
 * and stdout: a stand-in host (sh, env -i, cd), a task that prints, a crash, a launcher
 * that fails or prints a banner, close and terminate while busy, the option's rules, the
 * test program as a launcher, and real ssh to an sshd of the test's own */
TEST_ONCE(ln_standin)
TEST_ONCE(ln_print)
TEST_ONCE(ln_crash)
TEST_ONCE(ln_launcher_fails)
TEST_ONCE(ln_banner)
TEST_ONCE(ln_close_busy)
TEST_ONCE(ln_options)
TEST_ONCE(ln_self_launcher)
TEST_ONCE(ln_cancel_ahead)
TEST_ONCE(ln_ssh)

/* test-bigmsg.c: large messages through shared memory */
TEST_EACH(bm_paths)
TEST_EACH(bm_256mib)
TEST_EACH(bm_cap)
TEST_EACH(bm_many)
TEST_EACH(bm_faults)
TEST_EACH(bm_cannot_map)
TEST_EACH(bm_threads)

/* pp_map_array (test-maparray.c): results in place for batches of every shape, item
 * sizes, failures and wrong sizes, a killed worker's item alone and every item once,
 * misuse, empty arguments and results, items one by one, calls from other threads, a pool
 * terminated under a call, a caller's loop */
TEST_EACH(ma_results)
TEST_EACH(ma_item_sizes)
TEST_EACH(ma_failures)
TEST_EACH(ma_reply_sequences)
TEST_EACH(ma_worker_killed)
TEST_EACH(ma_api)
TEST_EACH(ma_misuse_places)
TEST_EACH(ma_empty)
TEST_EACH(ma_one_by_one)
TEST_EACH(ma_threads)
TEST_EACH(ma_terminated)
TEST_EACH(ma_caller_loop)

/* test-xwait.c: waits across threads and loops (issue 22, items 4 to 10): a wait on a
 * caller's loop woken by another pool's future, a wait on a loop that ran dry, limits past
 * 64 bits of nanoseconds, a stream from another thread on a pool that gave up, another
 * thread's pp_map_array on a loop that ran dry, a forked task and its parent's pool, the
 * largest max_message_bytes */
TEST_EACH(xw_wait_any_pools)
TEST_EACH(xw_wait_dry)
TEST_EACH(xw_deadline_max)
TEST_EACH(xw_stream_broken)
TEST_EACH(xw_array_dry)
TEST_EACH(xw_fork_parent)
TEST_ONCE(xw_max_message)

/* test-xmodel.c: the many-thread model (issue 22): 2 to 8 threads and 1 to 3 pools
 * making random calls, from callbacks and across pools too, checked for one outcome per
 * task, one run at most, every call returning */
TEST_EACH(xmodel)

/* Workers that attack their parent on purpose (test-hostile.c) */
TEST_EACH(hostile_truncate)
TEST_EACH(hostile_journal_lie)
TEST_EACH(hostile_journal_finished)
TEST_EACH(hostile_scribble)
TEST_EACH(idle_death_reruns)
TEST_EACH(retire_cancel)
