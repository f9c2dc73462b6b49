"""Names shared by every writer and reader: columns, sidecar keys, file names, path patterns.

One place, so a stage that writes a column and a stage that reads it cannot drift apart.
"""

SCHEMA_VERSION = 1

# --- corpus shards: results/corpus/corpus-<tag>/{split}/shard-{shard}.parquet
COL_DOC_ID = "doc_id"
COL_DOC_IDX = "doc_idx"
COL_TEXT = "text"
COL_TOPIC = "topic"  # optional: the built-in corpus names the document's topic
CORPUS_COLUMNS = (COL_DOC_ID, COL_DOC_IDX, COL_TEXT)

# --- activation shards (stage-0 schema of the release, SPEC §4.3, plus char_end)
COL_N_RAW_TOKENS = "n_raw_tokens"
COL_DETOK = "detokenized_text_truncated"
COL_VECTOR = "activation_vector"
COL_LAYER = "activation_layer"
COL_CHAR_END = "char_end"
COL_POSITION = "position"  # token index of the extraction token (= n_raw_tokens - 1)
COL_ALIGN_ERR = "align_error_chars"  # |char_end of own token - primary char_end|, aligned families
ACTIVATION_COLUMNS = (
    COL_DOC_ID,
    COL_N_RAW_TOKENS,
    COL_DETOK,
    COL_VECTOR,
    COL_LAYER,
    COL_CHAR_END,
)


def layer_column(layer: int) -> str:
    """Column holding the vectors of an additional layer (the primary layer uses COL_VECTOR)."""
    return f"{COL_VECTOR}_L{layer}"


# --- positions shards (primary family): (doc_id, char_end)
POSITIONS_COLUMNS = (COL_DOC_ID, COL_CHAR_END)

# --- sidecars
SIDECAR_NAME = "nla_meta.yaml"  # checkpoint directories
DATASET_SIDECAR_SUFFIX = ".nla_meta.yaml"  # next to a parquet shard: shard-00000.nla_meta.yaml
KIND_MODEL = "nla_model"
KIND_DATASET = "nla_dataset"
VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_KEY = "weight"
# the files of a checkpoint that a load reads: what a hub snapshot downloads and what a local
# folder's content fingerprint covers (fnmatch patterns on the path inside the folder)
CHECKPOINT_FILES = ("*.json", "*.yaml", "*.safetensors", "*.txt", "*.model", "*.jinja")
REMOTE_CODE_FILES = ("*.py",)  # only for an entry with trust_remote_code

# --- path conventions
SHARD_DIGITS = 5
TAG_LENGTH = 10


def shard_name(shard: int) -> str:
    return f"{shard:0{SHARD_DIGITS}d}"


# SPEC §4.7 default quote families (decode bans, span detection and redaction share them)
DOUBLE_QUOTES = '"\u201c\u201d\u201e\u201f\uff02\u00ab\u00bb'
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b\uff07"

# decode conditions of every family (each family adds greedy_L{k} for its adjacent layers), and
# those of the quote ablation (E2)
CONDITIONS = ("greedy", "ban_dq", "ban_dq_sq", "sample_t1")
BAN_CONDITIONS = ("greedy", "ban_dq", "ban_dq_sq")

# parquet schema-metadata key of a decode shard's provenance and summary (decode, redact, score)
DECODE_META_KEY = "nlaprobe.decode"
