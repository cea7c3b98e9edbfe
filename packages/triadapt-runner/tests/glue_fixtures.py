"""Small files in the official GLUE download layout (glue_data/<Task>/{train,dev}.tsv)."""

from pathlib import Path

S1, S2 = 'He said "no" and left.', "A man left after refusing."
MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]

FILES = {
    "CoLA": {"train.tsv": [["gj04", "1", "", "Our friends won't buy this analysis."],
                           ["gj04", "0", "*", "They drank the pub."]],
             "dev.tsv": [["gj04", "0", "*", "The more we study verbs."]]},
    "SST-2": {"train.tsv": [["sentence", "label"], ["hide new secretions from the parental units ", "0"],
                            [S1, "1"]],
              "dev.tsv": [["sentence", "label"], ["it 's a charming journey . ", "1"]]},
    "MRPC": {"train.tsv": [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["1", "702876", "702977", S1, S2],
                           ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "It sold the chain ."]],
             "dev.tsv": [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["1", "1", "2", S2, S1]]},
    "QQP": {"train.tsv": [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                          ["133273", "213221", "213222", "How is life?", "What is life?", "0"]],
            "dev.tsv": [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                        ["1", "2", "3", "Why?", "Why not?", "1"]]},
    "STS-B": {"train.tsv": [["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                             "sentence2", "score"],
                            ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                             "A plane is taking off.", "An air plane is taking off.", "5.000"]],
              "dev.tsv": [["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                           "sentence2", "score"],
                          ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none", "A man.", "A dog.",
                           "0.500"]]},
    "MNLI": {"train.tsv": [MNLI_HEAD + ["label1", "gold_label"],
                           ["0", "31193", "31193n", "government", "(", "(", "(", "(", S1, S2, "neutral", "neutral"],
                           ["1", "101457", "101457e", "telephone", "(", "(", "(", "(", S2, S1, "entailment",
                            "entailment"]],
             "dev_matched.tsv": [MNLI_HEAD + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
                                 ["0", "63735", "63735n", "slate", "(", "(", "(", "(", S1, S2, "contradiction",
                                  "contradiction", "neutral", "contradiction", "contradiction", "contradiction"]]},
    "QNLI": {"train.tsv": [["index", "question", "sentence", "label"], ["0", "When?", "In 1990.", "entailment"]],
             "dev.tsv": [["index", "question", "sentence", "label"], ["0", "Who?", "Nobody knows.", "not_entailment"]]},
    "RTE": {"train.tsv": [["index", "sentence1", "sentence2", "label"], ["0", S1, S2, "not_entailment"]],
            "dev.tsv": [["index", "sentence1", "sentence2", "label"], ["0", S2, S1, "entailment"]]},
}


def write_glue(root: Path) -> Path:
    for folder, files in FILES.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, rows in files.items():
            (root / folder / name).write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return root
