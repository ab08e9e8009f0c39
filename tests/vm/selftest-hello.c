/* A small dynamically linked glibc program for tests/vm/selftest.sh: proves that host-built
 * binaries run in the VM. It links libcrypt, which the guest image does not have, so the host side
 * has to copy that library in (ipvs-vm.sh run --libs-of). */
#define _GNU_SOURCE
#include <crypt.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

int main(void) {
  struct utsname u;
  if (uname(&u) != 0) return 2;
  const char *h = crypt("ipvs", "$6$ipvsvm$");
  if (h == NULL || strncmp(h, "$6$ipvsvm$", 10) != 0) return 3;
  printf("hello from host binary on %s (crypt ok)\n", u.release);
  return 0;
}
