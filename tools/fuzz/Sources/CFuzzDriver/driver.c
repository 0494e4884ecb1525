/* Nothing to compile: the header declares libFuzzer's entry point. */
#include "CFuzzDriver.h"
