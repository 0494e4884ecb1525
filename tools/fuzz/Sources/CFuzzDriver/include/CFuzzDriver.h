#ifndef CFUZZDRIVER_H
#define CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's driver without its main (libclang_rt.fuzzer_no_main, linked by tools/fuzz/run.sh):
   parses libFuzzer's command line and runs `callback` on each input. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
