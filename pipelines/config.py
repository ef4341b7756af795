"""The pipeline's one typed parameter set. Defaults here are the pipeline's defaults.

`make run key=value ...` and every runner build a PipelineConfig first, so an unknown key or an
invalid value fails before anything runs, with the key named in the message.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catdog.k8s_names import DNS_LABEL, MAX_SERVICE_NAME
from catdog.labels import DEFAULT_LABEL_MAP, LabelFrom, parse_label_map
from catdog.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from catdog.registry import RegistryError, check_run_id
from catdog.sources import CATS_AND_DOGS_FILTERED_URL

Augmentation = Literal["flip", "rotation", "zoom", "contrast", "brightness", "grayscale"]
Metric = Literal["accuracy", "precision", "recall", "f1", "auc"]
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MIN_FINETUNE_SIZE = 32  # px; MobileNetV2's stride


class ConfigError(ValueError):
    """An invalid parameter; the message names the key."""


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # data
    data_uri: str = Field(CATS_AND_DOGS_FILTERED_URL, description="folder, .zip/.tar.gz path or URL, or gs:// "
                          "prefix; the default, cats_and_dogs_filtered.zip, is downloaded once into the cache")
    feedback_uri: str = Field("", description="folder or gs:// prefix of the feedback app's published photos "
                              "(<feedback_uri>/dataset/<label>/...), added to data_uri's; '' = none")
    label_from: LabelFrom = Field("folder", description="where labels come from: folder (class sub-folders), "
                                  "kaggle (<label>.<n>.<ext>) or oxford_pet (<Breed>_<n>.<ext>); catdog/labels.py")
    label_map: str = Field(DEFAULT_LABEL_MAP, description="folder=label renames, e.g. for cats_and_dogs_filtered")
    min_image_side: Annotated[int, Field(ge=1)] = DEFAULT_MIN_SIDE
    max_image_pixels: Annotated[int, Field(ge=1)] = DEFAULT_MAX_PIXELS
    # split and preprocessing
    train_split: Annotated[float, Field(gt=0, lt=1)] = 0.7
    val_split: Annotated[float, Field(gt=0, lt=1)] = 0.2
    test_split: Annotated[float, Field(gt=0, lt=1)] = 0.1
    image_size: Annotated[int, Field(ge=32, le=1024)] = 256  # alpha 0.35 gains ~1 point of test accuracy from 224 to 256 (docs/BENCHMARKS.md)
    # brightness: photos from other cameras and lighting; no rotation: the costliest layer (make
    # profile-train: 3.0 s an epoch of 1,556 photos, flip 1.4, zoom 2.7). Without it (and with 10
    # frozen + 5 fine-tuning epochs of 50 layers) 97.9% in 171 s against rotation's (4 + 12 epochs
    # of 100 layers) 98.3% in 573 s, on 2026-12-02: docs/BENCHMARKS.md
    augmentations: str = "flip,zoom,contrast,brightness"
    seed: int = 42
    # model and training
    backbone_alpha: float = 0.35
    weights: str = Field("imagenet", description="'imagenet' (Keras download), a local .h5 path, a gs:// URI, or 'none' (random init)")
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    # the frozen phase trains the head on features computed once (catdog.train.train_head): ~1 s an epoch
    frozen_epochs: Annotated[int, Field(ge=0)] = 10
    finetune_epochs: Annotated[int, Field(ge=0)] = 5  # an upper bound: early stopping on val_loss ends it
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-3
    # 100 of the backbone's 154 layers, from 1e-4 on a cosine (finetune_lr_schedule): make bench
    # 0.983 / 0.979 / 0.982 on seeds 42 / 1 / 2 where 50 layers at a constant 5e-5 gave 0.982 / 0.976 /
    # 0.982 (median 0.982 both; log loss 0.044 vs 0.047), the whole run 0.92x the tutorial's time
    # against 0.89x: docs/BENCHMARKS.md
    finetune_learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-4
    finetune_layers: Annotated[int, Field(ge=0)] = 100
    # an exponential moving average of the fine-tuned weights (the Keras optimizer's use_ema), swapped
    # into the model at the end of every epoch, so validation, early stopping and the exported model see
    # the averaged weights; 0 = off. Median of 3 seeds 0.976 -> 0.981 at no extra time (docs/BENCHMARKS.md)
    finetune_ema_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    # the fine-tuning rate: "plateau" = constant, cut by 0.3 when val_loss stalls; "cosine" = decays
    # to 0 at the last allowed epoch (catdog.train.finetune_optimizer), so the last epochs take small
    # steps (with 50 layers cosine from 1e-4 and plateau at 5e-5 both gave 0.982 / 0.976 / 0.982)
    finetune_lr_schedule: Literal["plateau", "cosine"] = "cosine"
    # label smoothing of the cross-entropy in both phases (0 = off). 0.1: the same 0.982 on seed 42,
    # log loss 0.047 -> 0.101 and ECE 0.008 -> 0.062 (docs/BENCHMARKS.md): off
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # fine-tuning sees the augmented photos downscaled to this share of image_size (FixRes: a model
    # trained on zoomed-in crops sees objects larger than at test time, so a lower training
    # resolution matches the test one's object sizes); validation, evaluation and serving stay at
    # image_size. 1 = off: at 224 and 192 px (0.875, 0.75) test accuracy fell on the seeds tried and
    # an epoch took as long (docs/BENCHMARKS.md)
    finetune_image_scale: Annotated[float, Field(gt=0, le=1)] = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    early_stopping_patience: Annotated[int, Field(ge=1)] = 4
    test_time_flip: bool = Field(True, description="the exported model averages the image and its mirror image")
    # The exported model also averages the centre test_time_crop of each side, seen at image_size (its
    # input is then about image_size / test_time_crop px; catdog.test_time_views); 1 = off.
    # 0.8 was the best of 0.85 / 0.8 / 0.75 / 0.7 on the validation photos of three seeds' models;
    # make bench's median test accuracy 0.982 -> 0.988, serving p50 1.16x (docs/BENCHMARKS.md, "Test-time views")
    test_time_crop: Annotated[float, Field(gt=0, le=1)] = 0.8
    # champion selection
    registry_uri: str = Field("registry", description="local folder or gs:// prefix of the model registry")
    champion_metric: Metric = "accuracy"
    champion_margin: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # the run's id, recorded with its champion decision in the registry's history: whoever starts a
    # run reads "the decision of run X" from there (catdog/registry.py decision_of_run). '' = make
    # one: `make run` makes a uuid4 hex (printed first), the feedback app passes its run id, and a
    # scheduled run (which cannot know its id up front) records the service's id of the run
    run_id: str = Field("", description="the run's id, recorded with its champion decision ('' = make one)")
    # deployment (runs only when the challenger is promoted; see catdog/deploy/ and manifests/).
    # local: the registry's champion alias (`make serve` follows it); kserve: an InferenceService;
    # vertex: a Vertex AI endpoint. kserve and vertex read the model from a gs:// registry.
    deploy_target: Literal["local", "kserve", "vertex"] = "local"
    # (KServe derives longer host and revision names from it: keep it short)
    kserve_name: Annotated[str, Field(pattern=DNS_LABEL, max_length=MAX_SERVICE_NAME)] = "catdog"
    kserve_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = "catdog"
    kserve_manifest: str = Field("manifests/base", description="InferenceService YAML or kustomize folder "
                                 "(relative to the repository), e.g. manifests/overlays/prod")
    kserve_ready_timeout_s: Annotated[int, Field(ge=0)] = 600
    # share of the traffic the new champion gets at first, the previous model keeping the rest
    # (KServe canaryTrafficPercent, Vertex traffic split); 0 = all of it at once
    canary_percent: Annotated[int, Field(ge=0, le=100)] = 0
    serving_image: str = Field("", description="the pushed predictor image (serving/Dockerfile); needed for kserve and vertex")
    vertex_project: str = ""
    vertex_region: str = "us-central1"
    vertex_model: str = "catdog"
    vertex_endpoint: str = "catdog"
    vertex_machine_type: str = "n1-standard-2"
    vertex_min_replicas: Annotated[int, Field(ge=1)] = 1
    vertex_max_replicas: Annotated[int, Field(ge=1)] = 2

    @field_validator("augmentations")
    @classmethod
    def _known_augmentations(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        known = Augmentation.__args__
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {list(known)}")
        return ",".join(names)

    @field_validator("feedback_uri")
    @classmethod
    def _feedback_uri_scheme(cls, value: str) -> str:
        if "://" in value and not value.startswith("gs://"):
            raise ValueError(f"{value!r}: give a local folder or a gs:// prefix")
        return value

    @field_validator("run_id")
    @classmethod
    def _usable_run_id(cls, value: str) -> str:
        if value:
            try:
                check_run_id(value)
            except RegistryError as exc:
                raise ValueError(str(exc).removeprefix(f"run id {value!r}: ")) from None
        return value

    @field_validator("label_map")
    @classmethod
    def _label_map_format(cls, value: str) -> str:
        parse_label_map(value)
        return value

    @field_validator("backbone_alpha")
    @classmethod
    def _known_alpha(cls, value: float) -> float:
        if value not in MOBILENET_V2_ALPHAS:
            raise ValueError(f"MobileNetV2 alpha must be one of {MOBILENET_V2_ALPHAS}")
        return value

    @model_validator(mode="after")
    def _finetune_size_is_usable(self) -> PipelineConfig:
        if round(self.image_size * self.finetune_image_scale) < MIN_FINETUNE_SIZE:
            raise ValueError(f"finetune_image_scale: {self.finetune_image_scale:g} x image_size {self.image_size} is "
                             f"below {MIN_FINETUNE_SIZE} px; raise it (1 = fine-tune at image_size)")
        return self

    @model_validator(mode="after")
    def _splits_sum_to_one(self) -> PipelineConfig:
        total = self.train_split + self.val_split + self.test_split
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train_split + val_split + test_split must sum to 1, got "
                f"{self.train_split} + {self.val_split} + {self.test_split} = {total:g}"
            )
        return self

    @model_validator(mode="after")
    def _deploy_settings_fit_the_target(self) -> PipelineConfig:
        """A remote target reads the model from the registry, so the registry must be on gs://."""
        if self.deploy_target in ("kserve", "vertex") and not self.registry_uri.startswith("gs://"):
            raise ValueError(f"registry_uri: deploy_target={self.deploy_target} serves the model from the "
                             f"registry, which must then be a gs:// prefix (got {self.registry_uri!r})")
        required = {"kserve": ("serving_image",), "vertex": ("vertex_project", "serving_image")}
        for key in required.get(self.deploy_target, ()):
            if not getattr(self, key):  # the manifests' image is a placeholder: nothing could pull it
                raise ValueError(f"{key}: required when deploy_target={self.deploy_target}")
        if self.vertex_min_replicas > self.vertex_max_replicas:
            raise ValueError(f"vertex_max_replicas: {self.vertex_max_replicas} is below "
                             f"vertex_min_replicas {self.vertex_min_replicas}")
        return self

    def pipeline_arguments(self) -> dict:
        """The KFP pipeline's parameter values (names equal the pipeline function's arguments)."""
        return self.model_dump()


def did_you_mean(unknown: list[str], known) -> str:
    """` (did you mean frozen_epochs?)` for the unknown names that are close to a known one."""
    hints = [f"{word} -> {match[0]}" if len(unknown) > 1 else match[0]
             for word in unknown if (match := difflib.get_close_matches(word, list(known), n=1))]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def build_config(overrides: dict[str, str] | None = None, base: PipelineConfig | None = None) -> PipelineConfig:
    """Apply string overrides (from the command line) to the defaults, or raise ConfigError."""
    base_values = (base or PipelineConfig()).model_dump()
    unknown = sorted(set(overrides or {}) - set(PipelineConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown}{did_you_mean(unknown, PipelineConfig.model_fields)}; "
            f"known: {', '.join(PipelineConfig.model_fields)}"
        )
    try:
        return PipelineConfig.model_validate({**base_values, **(overrides or {})}, strict=False)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if key:
                problems.append(f"{key}: {err['msg']}")
            else:  # a check across fields: its message starts with the key (or names the keys)
                problems.append(err["msg"].removeprefix("Value error, "))
        raise ConfigError("invalid parameter(s): " + "; ".join(problems)) from None
