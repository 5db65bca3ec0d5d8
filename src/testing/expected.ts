// The bundled model's reference greedy outputs (50 new tokens, BOS prepended). Here, not under
// test/, so that bench/ can check against them too (test/expected.ts re-exports them).

// Token ids from models/stories260K/EXPECTED.md (first prompt) and, for the other two
// prompts, from Hugging Face transformers' LlamaForCausalLM greedy generate() on the same files;
// their decoded text begins with EXPECTED.md's text for those prompts.
export const EXPECTED = [
  {
    prompt: 'Once upon a time',
    promptIds: [1, 403, 407, 261, 378],
    ids: [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
      411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
      338, 391, 266, 267, 337, 335, 312, 432, 398, 312],
    text: 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it'
  },
  {
    prompt: 'Tom had a big dog named Max.',
    promptIds: [1, 274, 287, 381, 261, 370, 400, 428, 395, 392, 412, 444, 426],
    ids: [392, 412, 444, 401, 396, 267, 337, 335, 345, 267, 422, 419, 426, 385, 328, 432, 392, 412, 444, 394,
      261, 370, 268, 414, 444, 426, 346, 391, 266, 267, 337, 335, 312, 426, 346, 391, 266, 267, 337, 335,
      312, 426, 13, 446, 412, 444, 391, 266, 267, 337],
    text: 'Tom had a big dog named Max. Max loved to play with his toys. One day, Max saw a big box. He wanted to play with it. He wanted to play with it.'
  },
  {
    prompt: 'The little birdie was very smart.',
    promptIds: [1, 291, 376, 268, 315, 418, 417, 411, 286, 399, 262, 423, 295, 413, 426],
    ids: [338, 381, 261, 370, 268, 315, 418, 395, 274, 424, 411, 316, 422, 426, 274, 424, 411, 316, 422, 286,
      399, 393, 426, 346, 263, 377, 267, 265, 268, 315, 418, 269, 336, 432, 313, 440, 417, 432, 274, 424,
      411, 316, 422, 443, 410, 457, 303, 359, 337, 335],
    text: 'The little birdie was very smart. She had a big bird named Tweety. Tweety was very happy. He went to the bird and said, "Hi, Twe'
  }
]

