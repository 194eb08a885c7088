/* The smallest program bench starts to measure the OS's own cost of starting a program
 * and hearing back from it: the floor under a spawned worker's start. */
#include <stdio.h>

int main(void) {
  putchar('!');
  return fflush(stdout) == 0 ? 0 : 1;
}
