"""The algorithm library: advantage estimators, policy losses, KL estimators and DAPO's
sampling helpers as pure tensor functions, registered by name.

Add your own with one decorator (:func:`register_advantage`, :func:`register_policy_loss`,
:func:`register_kl`, :func:`register_preference_loss`); configs refer to them by name (:class:`AlgorithmSettings`). See
docs/algorithms.md, "Algorithm library".
"""

from flowrl.algorithms.advantages import (AdvantageOutput, advantage_inputs, compute_advantages,
                                          group_normalize)
from flowrl.algorithms.kl import kl_estimate, kl_in_reward, kl_loss
from flowrl.algorithms.losses import compute_policy_loss
from flowrl.algorithms.preference import (PREFERENCE_LOSSES, dpo_loss, preference_pairs,
                                          register_preference_loss, select_pairs)
from flowrl.algorithms.masked import AGGREGATIONS, aggregate, masked_mean, masked_sum
from flowrl.algorithms.registry import (ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, Registry,
                                        register_advantage, register_kl, register_policy_loss)
from flowrl.algorithms.sampling import (GroupRefill, apply_overlong_penalty, filter_groups,
                                        overlong_penalty, varying_groups)
from flowrl.algorithms.settings import (AdvantageSettings, AlgorithmSettings,
                                        DynamicSamplingSettings, KLSettings, OverlongSettings,
                                        PolicyLossSettings)

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "AdvantageOutput", "AdvantageSettings", "AlgorithmSettings",
    "DynamicSamplingSettings", "GroupRefill", "KLSettings", "KL_ESTIMATORS", "OverlongSettings",
    "POLICY_LOSSES", "PREFERENCE_LOSSES", "PolicyLossSettings", "dpo_loss", "preference_pairs",
    "register_preference_loss", "select_pairs", "Registry", "advantage_inputs", "aggregate",
    "apply_overlong_penalty", "compute_advantages", "compute_policy_loss", "filter_groups",
    "group_normalize", "kl_estimate", "kl_in_reward", "kl_loss", "masked_mean", "masked_sum",
    "overlong_penalty", "register_advantage", "register_kl", "register_policy_loss",
    "varying_groups",
]
