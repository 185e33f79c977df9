#pragma once
// Umbrella header: everything kclip offers. Include the per-concept headers to compile less.
#include <kclip/error.h>
#include <kclip/runtime.h>
#include <kclip/safetensors.h>
#include <kclip/version.h>
