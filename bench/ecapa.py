"""A small random-init SpeechBrain ECAPA folder, saved the way SpeechBrain's hub folders are.

No registry ships ECAPA weights; tests and the speaker bench use this to load and time the
`speechbrain` engine offline (its scores mean nothing: the weights are random).
"""

from __future__ import annotations

from pathlib import Path


ECAPA_YAML = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [64, 64, 64, 64, 192]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 32
    lin_neurons: 96
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
pretrained_path: UNSET
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
"""


def build_ecapa_folder(folder: Path, seed: int = 0, channels: int = 64, lin_neurons: int = 96) -> Path:
    """A small random-init ECAPA (fixed seed) saved the way SpeechBrain's hub folders are."""
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(80, channels=[channels] * 4 + [3 * channels], kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=min(128, channels // 2),
                       lin_neurons=lin_neurons)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    InputNormalization(norm_type="global", std_norm=False)._save(folder / "mean_var_norm_emb.ckpt")
    yaml_text = (ECAPA_YAML.replace("[64, 64, 64, 64, 192]", str([channels] * 4 + [3 * channels]))
                 .replace("attention_channels: 32", f"attention_channels: {min(128, channels // 2)}")
                 .replace("lin_neurons: 96", f"lin_neurons: {lin_neurons}"))
    (folder / "hyperparams.yaml").write_text(yaml_text)
    return folder
