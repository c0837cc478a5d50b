"""The methods, in the order `--help` lists them. Each is declared whole in its args file (`METHOD` there);
adding a TRL method is one new args file and one line here."""

from rlhf_args import cpo, distillation, dpo, gkd, grpo, kto, orpo, ppo, reward, rloo, sft

METHODS = {m.name.lower(): m for m in [
    sft.METHOD,
    reward.METHOD,
    dpo.METHOD,
    cpo.CPO,
    cpo.SIMPO,
    cpo.CPOSIMPO,
    orpo.METHOD,
    kto.METHOD,
    gkd.METHOD,
    distillation.METHOD,
    rloo.METHOD,
    grpo.METHOD,
    ppo.METHOD,
]}
