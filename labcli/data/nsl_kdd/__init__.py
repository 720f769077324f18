"""NSL-KDD (Tavallaee et al. 2009): the official 20 % training file and KDDTest+, shipped gzipped; see README.md.

    from labcli.data import nsl_kdd
    train = nsl_kdd.read("train")            # DataFrame, 25,192 rows, columns nsl_kdd.COLUMNS
    test = nsl_kdd.read("test")              # KDDTest+, 22,544 rows (or test = nsl_kdd.read("test", "my.csv"))
    hard = test[test.difficulty < 21]        # KDDTest-21, 11,850 rows
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from labcli.data.files import check_columns, read_csv, source

HERE = Path(__file__).parent
FILES = {"train": HERE / "KDDTrain+_20Percent.txt.gz", "test": HERE / "KDDTest+.txt.gz"}
COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root num_file_creations "
    "num_shells num_access_files num_outbound_cmds is_host_login is_guest_login count srv_count "
    "serror_rate srv_serror_rate rerror_rate srv_rerror_rate same_srv_rate diff_srv_rate "
    "srv_diff_host_rate dst_host_count dst_host_srv_count dst_host_same_srv_rate dst_host_diff_srv_rate "
    "dst_host_same_src_port_rate dst_host_srv_diff_host_rate dst_host_serror_rate "
    "dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate label difficulty"
).split()
CATEGORICAL = ["protocol_type", "service", "flag"]


def read(split: Literal["train", "test"], data: str = "nsl_kdd"):
    """One split as a DataFrame with named columns. `data` (test split only): nsl_kdd, or a CSV in the same
    43-column format (no header) scored in place of KDDTest+."""
    path = FILES["train"] if split == "train" else source(data, "nsl_kdd", FILES["test"])
    df = read_csv(path, header=None)
    check_columns(df, len(COLUMNS), path, "NSL-KDD (41 features, label, difficulty)", "labcli/data/nsl_kdd/README.md")
    df.columns = COLUMNS
    return df
