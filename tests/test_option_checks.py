"""Every option we pass to peft, TRL, transformers and DeepSpeed is checked in the check phase, in our words: exit 2,
one paragraph naming our flag, its value and what is allowed, no traceback, output_dir not created, and no weights
read (the model's weights file is garbage here: had anything read it, the message would be a load error). Then
`reword` (utils/core/errors.py): what a library still refuses late names our flag and its value."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from conftest import ROOT, run_main

REWARDS = "def length(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n"
FAST = ["--max_steps", "1", "--save_strategy", "no", "--per_device_train_batch_size", "4"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_dir, data_dir):
    """A copy of the tiny model whose weights file is garbage, a reward function, DeepSpeed configs."""
    d = tmp_path_factory.mktemp("options")
    model = d / "garbage_weights"
    shutil.copytree(tiny_dir, model)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    (d / "rewards.py").write_text(REWARDS)
    zero2 = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
             "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    configs = {"micro": {"train_micro_batch_size_per_gpu": 8}, "accumulation": {"gradient_accumulation_steps": 4},
               "global": {"train_batch_size": 32}, "clipping": {"gradient_clipping": 0.5},
               "fp16": {"fp16": {"enabled": True}}, "bf16": {"bf16": {"enabled": True}},
               "lr": {"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, "auto": {}}
    for name, extra in configs.items():
        (d / f"ds_{name}.json").write_text(json.dumps({**zero2, **extra}))
    (d / "ds_no_zero.json").write_text(json.dumps({"train_batch_size": "auto"}))
    (d / "ds_no_accumulation.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    (d / "ds_broken.json").write_text('{\n  "zero_optimization": {"stage": 2},\n  "train_batch_size": auto\n}\n')
    return SimpleNamespace(model=model, dir=d, rewards=f"{d / 'rewards.py'}:length", data=data_dir)


def _argv(env, method: str, *extra):
    data = {"DPO": "pref.jsonl", "CPO": "pref.jsonl", "ORPO": "pref.jsonl", "KTO": "kto.jsonl", "GKD": "sft.jsonl",
            "SFT": "sft.jsonl", "Reward": "reward.jsonl"}.get(method, "prompts.jsonl")
    argv = ["--rlhf_type", method, "--model_name_or_path", env.model, "--train_data_path", env.data / data, *FAST]
    if method in ("GRPO", "RLOO", "PPO"):
        argv += ["--reward_funcs", env.rewards]
    if method == "GRPO":  # TRL's default 8 would not divide the batch of 4
        argv += ["--num_generations", "4"]
    if method == "GKD":
        argv += ["--teacher_model_name_or_path", env.model]
    return argv + list(extra)


def _refused(capsys, tmp_path, argv, *words):
    out = tmp_path / "out"
    rc = run_main(*argv, "--output_dir", out)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    message = err[err.index("error: "):].strip()
    assert "\n" not in message, message  # one paragraph
    for w in words:
        assert w in message, (w, message)
    assert "Could not load" not in message
    assert not out.exists()
    return message


# (method, extra flags, words the message must hold: our flag with its value, and the allowed range)
CASES = {
    # LoRA / peft
    "lora_rank 0": ("DPO", ["--lora_rank", "0"], "--lora_rank 0 is out of range", "an integer >= 1"),
    "lora_rank negative": ("SFT", ["--lora_rank", "-4"], "--lora_rank -4 is out of range", "an integer >= 1"),
    "lora_alpha 0": ("DPO", ["--lora_alpha", "0"], "--lora_alpha 0 is out of range", "a number > 0"),
    "lora_dropout 1": ("DPO", ["--lora_dropout", "1"], "--lora_dropout 1.0 is out of range", "[0, 1)"),
    "lora_dropout negative": ("KTO", ["--lora_dropout", "-0.1"], "--lora_dropout -0.1", "[0, 1)"),
    "target module typo": ("DPO", ["--lora_target_modules", "q_proj", "v_projj"],
                           "--lora_target_modules v_projj matches no module", "q_proj", "v_proj", "down_proj"),
    "target not a layer": ("Reward", ["--train_mode", "qlora", "--lora_target_modules", "norm"],
                           "--lora_target_modules norm names only modules peft cannot adapt", "o_proj"),
    "all-linear with others": ("DPO", ["--lora_target_modules", "all-linear", "q_proj"],
                               "--lora_target_modules all-linear q_proj", "all-linear stands alone"),
    # DeepSpeed
    "deepspeed missing": ("DPO", ["--deepspeed", "{dir}/nope.json"], "--deepspeed {dir}/nope.json",
                          "does not exist", "expected the path of a DeepSpeed JSON config"),
    "deepspeed not json": ("DPO", ["--deepspeed", "{dir}/ds_broken.json"], "{dir}/ds_broken.json:3:",
                           "is not valid JSON"),
    "deepspeed without zero": ("DPO", ["--deepspeed", "{dir}/ds_no_zero.json"], "has no zero_optimization block",
                               '"zero_optimization": {"stage": 2}'),
    "deepspeed micro batch": ("DPO", ["--deepspeed", "{dir}/ds_micro.json"], "sets train_micro_batch_size_per_gpu 8",
                              "--per_device_train_batch_size is 4", '"auto"'),
    "deepspeed accumulation": ("DPO", ["--deepspeed", "{dir}/ds_accumulation.json"],
                               "sets gradient_accumulation_steps 4", "--gradient_accumulation_steps is 1", '"auto"'),
    "deepspeed global batch": ("DPO", ["--deepspeed", "{dir}/ds_global.json", "--gradient_accumulation_steps", "2"],
                               "sets train_batch_size 32", "--per_device_train_batch_size 4 x "
                               "--gradient_accumulation_steps 2 x 1 process = 8"),
    "deepspeed clipping": ("DPO", ["--deepspeed", "{dir}/ds_clipping.json"], "sets gradient_clipping 0.5",
                           "--max_grad_norm is 1.0"),
    "deepspeed fp16": ("DPO", ["--deepspeed", "{dir}/ds_fp16.json"], "sets fp16.enabled true", "--fp16 is false"),
    "deepspeed bf16": ("DPO", ["--deepspeed", "{dir}/ds_bf16.json", "--bf16", "false"], "sets bf16.enabled true",
                       "--bf16 is false"),
    "deepspeed lr": ("DPO", ["--deepspeed", "{dir}/ds_lr.json"], "sets optimizer.params.lr 0.1",
                     "--learning_rate is 5e-06"),
    "deepspeed accumulation missing": ("DPO", ["--deepspeed", "{dir}/ds_no_accumulation.json",
                                               "--gradient_accumulation_steps", "2"],
                                       "has no gradient_accumulation_steps", "--gradient_accumulation_steps is 2",
                                       '"gradient_accumulation_steps": "auto"'),
    "deepspeed without a launcher": ("DPO", ["--deepspeed", "{dir}/ds_auto.json"], "--deepspeed {dir}/ds_auto.json "
                                     "needs a launcher", "torchrun --nproc_per_node", "script/zero2.yaml"),
    # generation lengths and batches
    "max_length 0": ("DPO", ["--max_length", "0"], "--max_length 0 is out of range", "a number of tokens >= 1"),
    "max_completion_length 0": ("GRPO", ["--max_completion_length", "0"], "--max_completion_length 0 is out of range",
                                "a number of tokens >= 1"),
    "max_prompt_length 0": ("PPO", ["--max_prompt_length", "0"], "--max_prompt_length 0", "a number of tokens >= 1"),
    "max_new_tokens 0": ("GKD", ["--max_new_tokens", "0"], "--max_new_tokens 0 is out of range", ">= 1"),
    "num_generations 1": ("GRPO", ["--num_generations", "1"], "--num_generations 1 is out of range", ">= 2"),
    "num_generations vs batch": ("GRPO", ["--num_generations", "3"], "--num_generations 3 does not divide the "
                                 "generation batch of 4 completions", "--per_device_train_batch_size 4 x 1 process x "
                                 "--gradient_accumulation_steps 1", "a divisor of 4"),
    "RLOO num_generations vs batch": ("RLOO", ["--num_generations", "8"], "--num_generations 8 does not divide",
                                      "a divisor of 4"),
    "generation_batch_size vs batch": ("GRPO", ["--num_generations", "2", "--generation_batch_size", "6"],
                                       "--generation_batch_size 6 is not a multiple", "a multiple of 4"),
    "generation batch both set": ("RLOO", ["--generation_batch_size", "8", "--steps_per_generation", "2"],
                                  "--generation_batch_size 8 and --steps_per_generation 2 are both set",
                                  "one of them at most"),
    "eval batch vs num_generations": ("GRPO", ["--num_generations", "4", "--eval_strategy", "steps",
                                               "--per_device_eval_batch_size", "2"],
                                      "--num_generations 4 does not divide the evaluation batch", "a multiple of 4"),
    # sampling
    "temperature 0": ("GRPO", ["--temperature", "0"], "--temperature 0.0 is out of range", "a number > 0"),
    "PPO temperature": ("PPO", ["--temperature", "-1"], "--temperature -1.0 is out of range", "a number > 0"),
    "GKD temperature": ("GKD", ["--temperature", "0"], "--temperature 0.0 is out of range", "a number > 0"),
    "top_p 0": ("RLOO", ["--top_p", "0"], "--top_p 0.0 is out of range", "a fraction in (0, 1]"),
    "top_p above 1": ("PPO", ["--top_p", "1.5"], "--top_p 1.5 is out of range", "a fraction in (0, 1]"),
    "top_k negative": ("GRPO", ["--top_k", "-1"], "--top_k -1 is out of range", "an integer >= 0"),
    "min_p above 1": ("GRPO", ["--min_p", "2"], "--min_p 2.0 is out of range", "a fraction in [0, 1]"),
    "repetition_penalty 0": ("RLOO", ["--repetition_penalty", "0"], "--repetition_penalty 0.0", "a number > 0"),
    # method options
    "DPO beta 0": ("DPO", ["--beta", "0"], "--beta 0.0 is out of range", "a number > 0"),
    "DPO unknown loss": ("DPO", ["--loss_type", "sigmoid", "sigmod"], "--loss_type sigmod is not a DPO loss of TRL",
                         "expected one of sigmoid, hinge, ipo"),
    "DPO exo_pair": ("DPO", ["--loss_type", "exo_pair"], "--loss_type exo_pair needs --label_smoothing > 0, got 0.0"),
    "DPO loss_weights": ("DPO", ["--loss_type", "sigmoid", "sft", "--loss_weights", "1"],
                         "--loss_weights has 1 values for 2 --loss_type values", "one weight per loss"),
    "DPO f-divergence name": ("DPO", ["--f_divergence_type", "kl"], "--f_divergence_type kl is not",
                              "reverse_kl, forward_kl"),
    "DPO f-divergence loss": ("DPO", ["--f_divergence_type", "forward_kl", "--loss_type", "bco_pair"],
                              "--f_divergence_type forward_kl does not apply to --loss_type bco_pair",
                              "--f_divergence_type reverse_kl"),
    "DPO weighting aot": ("DPO", ["--use_weighting", "true", "--loss_type", "aot"], "--use_weighting true",
                          "--loss_type aot", "expected --use_weighting false"),
    "DPO sync with precompute": ("DPO", ["--sync_ref_model", "true"], "--sync_ref_model true",
                                 "--precompute_ref_log_probs true", "expected --precompute_ref_log_probs false"),
    "KTO batch 1": ("KTO", ["--per_device_train_batch_size", "1"], "--per_device_train_batch_size 1 is too small",
                    "an integer >= 2"),
    "KTO sampling": ("KTO", ["--train_sampling_strategy", "random"], "--train_sampling_strategy random",
                     "expected sequential"),
    "KTO beta": ("KTO", ["--beta", "-1"], "--beta -1.0 is out of range", "a number > 0"),
    "CPO loss": ("CPO", ["--loss_type", "kto_pair"], "--loss_type kto_pair is not a CPO loss of TRL",
                 "sigmoid, hinge, ipo, simpo"),
    "CPO alpha": ("CPO", ["--cpo_alpha", "-1"], "--cpo_alpha -1.0 is out of range", "a weight >= 0"),
    "ORPO beta": ("ORPO", ["--beta", "0"], "--beta 0.0 is out of range", "a number > 0"),
    "GKD lmbda": ("GKD", ["--lmbda", "1.5"], "--lmbda 1.5 is out of range", "a fraction in [0, 1]"),
    "GKD beta": ("GKD", ["--beta", "-0.5"], "--beta -0.5 is out of range", "a fraction in [0, 1]"),
    "GRPO beta": ("GRPO", ["--beta", "-0.1"], "--beta -0.1 is out of range", "a KL weight >= 0"),
    "GRPO loss": ("GRPO", ["--loss_type", "ppo"], "--loss_type ppo is not a GRPO loss of TRL", "grpo, dr_grpo, dapo"),
    "GRPO scale_rewards": ("GRPO", ["--scale_rewards", "true"], "--scale_rewards true is not",
                           "group, batch, none"),
    "GRPO importance level": ("GRPO", ["--importance_sampling_level", "seq"], "--importance_sampling_level seq",
                              "token, sequence"),
    "GRPO num_iterations": ("GRPO", ["--num_iterations", "0"], "--num_iterations 0 is out of range", ">= 1"),
    "GRPO sync without reference": ("GRPO", ["--sync_ref_model", "true"], "--sync_ref_model true with --beta 0.0",
                                    "expected --beta > 0"),
    "RLOO sync with an adapter": ("RLOO", ["--sync_ref_model", "true", "--train_mode", "lora"],
                                  "--sync_ref_model true", "--train_mode lora", "expected --train_mode full"),
    # shared training options
    "batch 0": ("SFT", ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0 is out of range",
                "an integer >= 1"),
    "max_grad_norm negative": ("Reward", ["--max_grad_norm", "-1"], "--max_grad_norm -1.0 is out of range", ">= 0"),
    # what TRL's configs still refuse themselves, reworded as they are built (rlhf_args/base.py)
    "TRL config refusal": ("GRPO", ["--log_completions_hub_repo", "me/completions"],
                           "The GRPO configuration refused --log_completions_hub_repo me/completions, "
                           "--log_completions false"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_option_refused_early(case, env, tmp_path, capsys):
    method, extra, *words = CASES[case]
    extra = [str(a).replace("{dir}", str(env.dir)) for a in extra]
    _refused(capsys, tmp_path, _argv(env, method, *extra), *(w.replace("{dir}", str(env.dir)) for w in words))


def test_rules_apply_where_they_belong(env, tmp_path, capsys):
    """The adapter rules are for lora / qlora only, and the DeepSpeed rules take "auto": such runs pass the check
    phase and reach the (garbage) weights: the load error proves it, without training."""
    for extra in (["--train_mode", "full", "--lora_rank", "0", "--lora_target_modules", "nope"],
                  ["--lora_target_modules", "q_proj", "self_attn.v_proj"]):
        rc = run_main(*_argv(env, "DPO", *extra), "--output_dir", tmp_path / "o")
        err = capsys.readouterr().err
        assert rc == 2 and "Could not load the model" in err, err


def test_deepspeed_auto_configs_pass(monkeypatch):
    """The shipped DeepSpeed config (every batch value "auto") and an accelerate config without a file pass; an
    accelerate config's own numbers are compared with the flags."""
    from utils.cli.deepspeed_checks import check_deepspeed

    config = SimpleNamespace(deepspeed=str(ROOT / "script" / "zero3_offload.json"), per_device_train_batch_size=4,
                             gradient_accumulation_steps=8, max_grad_norm=1.0, learning_rate=1e-5, adam_beta1=0.9,
                             adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0, fp16=False, fp16_full_eval=False,
                             bf16=True, bf16_full_eval=False, auto_find_batch_size=False)
    monkeypatch.setenv("LOCAL_RANK", "0")  # as a launcher sets it: without one, --deepspeed is refused
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert check_deepspeed(config) is None
    config.deepspeed = None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "auto")
    assert check_deepspeed(config) is None
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    message = check_deepspeed(config)
    assert "gradient_accumulation_steps: 2" in message and "--gradient_accumulation_steps is 8" in message


# ------------------------------------------------------------------------------------------- reword
def _common(**kw):
    from common_args import CommonArgs

    return CommonArgs(rlhf_type="DPO", model_name_or_path="m", train_data_path=["d"], **kw)


def test_reword_peft_rank():
    """peft's own exception for r = 0 (raised when the adapter is built on a model) names our flag and value."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(4, 4))
    with pytest.raises(ValueError) as raised:
        get_peft_model(model, LoraConfig(r=0, target_modules=["proj"]))
    from utils.core.errors import reword

    message = str(reword(raised.value, _common(lora_rank=0), None, "peft"))
    assert message.startswith("peft refused --lora_rank 0: `r` should be a positive integer"), message
    assert "`r` is our --lora_rank" in message


def test_reword_peft_targets():
    import torch
    from peft import LoraConfig, get_peft_model

    with pytest.raises(ValueError) as raised:
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(r=2, target_modules=["nope"]))
    from utils.core.errors import reword

    message = str(reword(raised.value, _common(lora_target_modules=["nope"]), None, "The DPO trainer"))
    assert "refused --lora_target_modules nope:" in message and "not found in the base model" in message, message


def test_reword_trl_field_and_fallbacks(tmp_path):
    """A TRL trainer's message naming its field (`router_aux_loss_coef`, as DPOTrainer refuses it on a dense model)
    names our flag of that name with its value; a ValueError naming none keeps the library's sentence after where it
    came from; a TypeError naming none is ours (None: it goes up with its traceback)."""
    from rlhf_args.dpo import DPOArgs
    from utils.core.errors import UserError, reword

    config = DPOArgs(output_dir=str(tmp_path / "o"), router_aux_loss_coef=0.5)
    error = ValueError("`router_aux_loss_coef` is set to 0.5 but Qwen2ForCausalLM is not a Mixture-of-Experts model "
                       "that returns its router logits, so there is no auxiliary loss to weight.")
    message = str(reword(error, _common(), config, "The DPO trainer"))
    assert message.startswith("The DPO trainer refused --router_aux_loss_coef 0.5: `router_aux_loss_coef` is set"), \
        message
    plain = reword(ValueError("something else went wrong"), _common(), config, "The DPO trainer", " Hint.")
    assert isinstance(plain, UserError)
    assert str(plain) == "The DPO trainer refused the configuration: something else went wrong. Hint."
    assert reword(TypeError("f() got an unexpected keyword argument 'x'"), _common(), config) is None
