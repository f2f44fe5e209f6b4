"""Built-in modules for Hugging Face causal LMs: users of the standard algorithms write no
module classes (``flowrl train`` builds them from the config).

Import them from their files (``from flowrl.models.builtin.policy import Policy``); each file
holds one role: generation (``policy``), frozen scorers (``reference``, ``critic``,
``reward_model``, ``function_reward``), the algorithm's math (``advantage``) and the trainers
(``actor``, ``critic_trainer``, ``preference``, ``sft``).
"""
