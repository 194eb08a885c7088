/* Windows has neither fork nor a forkserver: spawn is its one start method. */
#include "../serve.h"
#include "../methods.h"

const pp__method_ops *const pp__fork_ops = NULL;
const pp__method_ops *const pp__forkserver_ops = NULL;

int pp__forkserver_main(const char *spec) {
  (void) spec;
  return PP_ENOTSUP;
}
