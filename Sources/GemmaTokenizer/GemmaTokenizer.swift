// GemmaTokenizer module.
