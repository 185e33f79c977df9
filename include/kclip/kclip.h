#pragma once
// Umbrella header: everything kclip offers. Include the per-concept headers to compile less.
#include <kclip/clip.h>
#include <kclip/cluster.h>
#include <kclip/cluster_metrics.h>
#include <kclip/distributed.h>
#include <kclip/embedding_cache.h>
#include <kclip/error.h>
#include <kclip/llama.h>
#include <kclip/llama_tokenizer.h>
#include <kclip/loss_concept.h>
#include <kclip/loss_contrastive.h>
#include <kclip/loss_distillation.h>
#include <kclip/loss_knowledge_clip.h>
#include <kclip/runtime.h>
#include <kclip/safetensors.h>
#include <kclip/teacher.h>
#include <kclip/version.h>
