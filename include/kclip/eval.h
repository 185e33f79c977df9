#pragma once
// Evaluation of CLIP students, the standard way (OpenAI's and clip_benchmark's procedures):
//   zero-shot classification   class names × prompt templates, classifier = mean of normalised text embeddings
//   linear probe               frozen image features → L2-regularised multinomial logistic regression (L-BFGS), the
//                              strength chosen on a validation split (the CLIP paper's protocol)
//   retrieval                  image→text and text→image recall@k with several captions per image, computed in
//                              chunks with running top-k (memory bounded for any number of pairs)
//   text reconstruction probe  Kamath et al.'s probe: a frozen text encoder → linear + LayerNorm → a small
//                              Transformer decoder that must regenerate the caption; exact match, token accuracy
//   concept agreement          the student's concept heads and text space against the teacher's K-means concepts
// Every result is a JSON-ready structure; `kclip eval` writes them as one document.
#include <kclip/clip.h>
#include <kclip/clip_tokenizer.h>
#include <kclip/cluster.h>
#include <kclip/data.h>
#include <kclip/embedding_cache.h>
#include <kclip/loss_knowledge_clip.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kclip {

// ---- features -------------------------------------------------------------------------------------------------

// Image features of every sample of `data`, in order (evaluation transform, no grad; L2-normalised unless
// `normalize` is false), and their labels (class ids, -1 for caption data). Unreadable images are an error naming
// the file.
struct ImageFeatures {
  at::Tensor features;  // float [N, embed_dim] on the CPU
  at::Tensor labels;    // int64 [N]
};
ImageFeatures encode_images(CLIP& model, std::shared_ptr<const Dataset> data, int64_t batch_size = 256, int64_t workers = 0,
                            bool normalize = true);
// Text features [N, embed_dim] of `texts` (no grad; L2-normalised unless `normalize` is false), on the CPU.
at::Tensor encode_texts(CLIP& model, const ClipTokenizer& tokenizer, const std::vector<std::string>& texts,
                        int64_t batch_size = 256, bool normalize = true);

// ---- zero-shot classification ---------------------------------------------------------------------------------

// OpenAI's zero-shot classifier: per class, the texts are encoded and L2-normalised, averaged and normalised
// again; the columns of the result [embed_dim, classes] are the classes.
at::Tensor zeroshot_classifier(CLIP& model, const ClipTokenizer& tokenizer,
                               const std::vector<std::vector<std::string>>& texts_per_class);
at::Tensor zeroshot_classifier(CLIP& model, const ClipTokenizer& tokenizer, const std::vector<std::string>& class_names,
                               const std::vector<std::string>& templates);
// "001.Black_footed_Albatross" → "Black footed Albatross": a folder's name as a prompt says it.
std::string class_prompt_name(const std::string& folder_name);

struct ClassificationResult {
  double top1 = 0, top5 = 0;       // fractions in [0, 1]
  std::vector<double> per_class;   // accuracy of each class (NaN for a class without samples)
  int64_t samples = 0, classes = 0;
};
// Top-1 / top-5 (top-min(5, classes)) and per-class accuracy of logits [N, C] against labels [N].
ClassificationResult classification_accuracy(const at::Tensor& logits, const at::Tensor& labels);
// Zero-shot on a class-labelled data set (ImageFolderDataset, IdxDataset): its classes() name the classes.
ClassificationResult evaluate_zeroshot(CLIP& model, const ClipTokenizer& tokenizer, std::shared_ptr<const Dataset> data,
                                       const std::vector<std::string>& templates, int64_t batch_size = 256,
                                       int64_t workers = 0);

// ---- retrieval ------------------------------------------------------------------------------------------------

struct RetrievalResult {
  std::map<int64_t, double> image_to_text, text_to_image;  // k -> recall@k in [0, 1]
  int64_t images = 0, texts = 0;
};
// Recall@k from normalised features: an image→text hit is any of the image's captions among its k nearest texts
// (Flickr/COCO convention); text_image[t] is the index of text t's image. Similarities are computed in blocks of
// at most `block` × `block` with running top-k, never the whole matrix.
RetrievalResult retrieval_recall(const at::Tensor& image_features, const at::Tensor& text_features,
                                 const at::Tensor& text_image, const std::vector<int64_t>& ks = {1, 5, 10},
                                 int64_t block = 2048);
// On an open_clip-style CSV (image and caption columns, several rows per image, paths relative to the CSV).
RetrievalResult evaluate_retrieval(CLIP& model, const ClipTokenizer& tokenizer, const std::filesystem::path& csv,
                                   const CsvDatasetOptions& columns = CsvDatasetOptions().img_key("image").caption_key("caption"),
                                   int64_t batch_size = 256, int64_t workers = 0);

// ---- linear probe ---------------------------------------------------------------------------------------------

struct LinearProbeOptions {
  // Inverse regularisation strengths C tried (scikit-learn's meaning: minimise ½‖W‖² + C·Σ cross-entropy).
  TORCH_ARG(std::vector<double>, c_grid) = std::vector<double>{1e-3, 1e-2, 1e-1, 1, 10, 100, 1000};
  TORCH_ARG(double, validation_fraction) = 0.2;  // of the training set, to choose C
  TORCH_ARG(int64_t, max_iter) = 1000;           // L-BFGS iterations per fit
  TORCH_ARG(uint64_t, seed) = 0;
};
struct LinearProbeResult {
  double top1 = 0;                    // on the test set, with C chosen on validation and refit on all training data
  double c = 0;                       // the chosen C
  std::map<double, double> validation;  // C -> validation top-1
  int64_t train = 0, test = 0, classes = 0;
};
// Multinomial logistic regression with an unregularised bias, full-batch L-BFGS with strong-Wolfe line search;
// returns the weights [D, C] and bias [C].
std::pair<at::Tensor, at::Tensor> fit_logistic_regression(const at::Tensor& x, const at::Tensor& y, int64_t classes,
                                                          double c, int64_t max_iter = 1000);
LinearProbeResult linear_probe(const at::Tensor& train_x, const at::Tensor& train_y, const at::Tensor& test_x,
                               const at::Tensor& test_y, LinearProbeOptions options = {});
// The train and test images of an evaluation set: DIR/train + DIR/test class folders, a CUB-200 directory
// (images/, images.txt, train_test_split.txt), or "fashion-mnist" / "mnist".
struct ProbeSplit {
  std::shared_ptr<const Dataset> train, test;
};
ProbeSplit open_probe_split(const std::string& spec);
LinearProbeResult evaluate_linear_probe(CLIP& model, const ProbeSplit& split, LinearProbeOptions options = {},
                                        int64_t batch_size = 256, int64_t workers = 0);

// ---- text reconstruction probe --------------------------------------------------------------------------------

// Text → a fixed vector: a CLIP student's text tower, a teacher's pooled embedding, any function.
using TextEncoder = std::function<at::Tensor(const std::vector<std::string>&)>;

struct TextProbeOptions {
  TORCH_ARG(int64_t, width) = 256;        // decoder width
  TORCH_ARG(int64_t, layers) = 2;         // decoder blocks (causal self-attention + MLP, the encoding as prefix)
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(int64_t, max_tokens) = 32;    // caption tokens regenerated (longer captions are cut)
  TORCH_ARG(int64_t, prefix_tokens) = 4;  // decoder positions the linear map fills from one encoding
  TORCH_ARG(int64_t, epochs) = 20;
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, test_fraction) = 0.2;  // captions held out (split by caption hash) when no test set is given
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, freeze_decoder) = false;  // with a trained decoder given: train only the linear + LayerNorm map
};

struct TextProbeResult {
  double exact_match = 0, token_accuracy = 0;  // on held-out captions, greedy decoding
  double train_exact_match = 0;
  int64_t train = 0, test = 0, vocabulary = 0;
  std::vector<std::pair<std::string, std::string>> examples;  // (caption, reconstruction), a few held-out ones
};

// The probe: its vocabulary is the CLIP BPE tokens of the training captions (plus an unknown token); the map from
// the encoder's dimension into the decoder is retrained for each encoder, the decoder too unless frozen.
class TextProbe {
 public:
  TextProbe(const ClipTokenizer& tokenizer, const std::vector<std::string>& train_captions, int64_t encoder_dim,
            TextProbeOptions options = {});
  // Trains on the training captions' encodings, then scores held-out captions.
  TextProbeResult run(const TextEncoder& encoder, const std::vector<std::string>& train_captions,
                      const std::vector<std::string>& test_captions);
  // Keeps the decoder and gives a new map for another encoder (Kamath et al. reuse a decoder trained on a
  // reference encoder frozen).
  void reset_map(int64_t encoder_dim);
  std::vector<std::string> decode(const at::Tensor& encodings);  // greedy reconstructions

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};
// Splits captions deterministically (by hash) into (train, test).
std::pair<std::vector<std::string>, std::vector<std::string>> split_captions(const std::vector<std::string>& captions,
                                                                             double test_fraction);
TextEncoder clip_text_encoder(CLIP& model, const ClipTokenizer& tokenizer);

// ---- concept agreement ----------------------------------------------------------------------------------------

struct ConceptAgreement {
  double nmi = 0, purity = 0, ari = 0;                      // concept-head predictions vs the teacher's concepts
  double kmeans_nmi = 0, kmeans_purity = 0, kmeans_ari = 0;  // K-means on student text features vs the teacher's
  double distill_cosine = NAN;   // mean cos(W_e · student text, standardised teacher embedding) (α > 0)
  double knn_overlap = 0;        // mean |kNN_student ∩ kNN_teacher| / k over captions (k = 10)
  int64_t pairs = 0, concepts = 0;
  std::string head;              // which head predicted: "text", "image", "concat", or "" (no concept head)
};
// Over image–caption pairs (as for retrieval: a CSV/TSV, or a class-labelled source) whose captions are in the teacher cache. `loss` may be null
// (a student without its loss modules): then only the K-means, k-NN figures are computed.
ConceptAgreement evaluate_concepts(CLIP& model, const KnowledgeClipLossImpl* loss, const ClipTokenizer& tokenizer,
                                   const std::filesystem::path& pairs_csv, const CsvDatasetOptions& columns,
                                   const EmbeddingCache& teacher, const KMeans& concepts, int64_t batch_size = 256,
                                   int64_t workers = 0);

// ---- every evaluation in one call: what `kclip eval` and `kclip run` do ------------------------------------------
struct EvalSuiteOptions {
  TORCH_ARG(std::string, zeroshot) = "";                // image folder, "fashion-mnist" or "mnist" (test split)
  TORCH_ARG(std::string, templates) = "openai-imagenet";  // zero-shot prompts: a name or a file
  TORCH_ARG(std::string, retrieval) = "";               // pairs: CSV/TSV
  TORCH_ARG(std::string, linear_probe) = "";            // DIR with train/ + test/, CUB, or "fashion-mnist"
  TORCH_ARG(std::string, text_probe) = "";              // captions (CSV/TSV) for the reconstruction probe
  TORCH_ARG(int64_t, text_probe_epochs) = 20;
  TORCH_ARG(int64_t, text_probe_width) = 256;
  TORCH_ARG(std::string, teacher) = "";                 // also probe this Llama teacher (the upper reference)
  TORCH_ARG(std::string, teacher_tokenizer) = "";
  TORCH_ARG(std::string, concepts) = "";                // a K-means artifact: concept agreement
  TORCH_ARG(std::string, teacher_cache) = "";           // default: the cache a trainer checkpoint's run used
  TORCH_ARG(std::string, concept_data) = "";            // pairs for concepts: CSV/TSV or a class-labelled source
                                                         // (default: retrieval's, then text probe's)
  TORCH_ARG(CsvDatasetOptions, columns) = CsvDatasetOptions().img_key("image").caption_key("caption");
  TORCH_ARG(int64_t, batch_size) = 256;
  TORCH_ARG(int64_t, workers) = 0;
  TORCH_ARG(std::string, tokenizer) = "";               // CLIP BPE vocabulary (default: kclip's)
  TORCH_ARG(bool, quiet) = false;                       // no progress lines on stderr
};
// Runs every evaluation `options` names on `model` (a trainer checkpoint directory, a CLIP checkpoint, a config
// file or name) and returns one JSON document: {"format": "kclip-eval", "model": {...}, "settings": {...},
// "zeroshot": {...}, "retrieval": {...}, "linear_probe": {...}, "text_probe": {...}, "text_probe_teacher": {...},
// "concepts": {...}}, each result with its "data" and "seconds".
std::string evaluate_all(const std::string& model, const EvalSuiteOptions& options);

// ---- results as JSON (what `kclip eval` writes and Python returns as dicts; fractions in [0, 1]) -------------------
// {"top1", "top5", "samples", "classes", "per_class": {name: accuracy}}
std::string to_json(const ClassificationResult& r, const std::vector<std::string>& class_names = {});
// {"image_to_text": {"R@1", "R@5", "R@10"}, "text_to_image": {...}, "images", "texts"}
std::string to_json(const RetrievalResult& r);
// {"top1", "c", "validation": {C: top1}, "train", "test", "classes"}
std::string to_json(const LinearProbeResult& r);
// {"exact_match", "token_accuracy", "train_exact_match", "train", "test", "vocabulary", "examples": [[caption, reconstruction]]}
std::string to_json(const TextProbeResult& r);
// {"nmi", "purity", "ari", "head", "kmeans": {"nmi", "purity", "ari"}, "distill_cosine", "knn_overlap", "pairs", "concepts"}
std::string to_json(const ConceptAgreement& r);

}  // namespace kclip
