"""Compile the Triton kernels for an H100 (sm_90) without a GPU.

The interpreter checks the numerics but not what only the compiler sees
(loop-carried types, constexpr branches, pointer dtypes, register spills).
Triton can compile ahead of time for a named target with the ptxas bundled in
its wheel, so this runs in CPU-only CI. It has to run in a subprocess:
this session has ``TRITON_INTERPRET=1``, which makes ``@triton.jit`` produce
interpreter objects instead of compilable ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, tempfile
    import triton
    import triton.backends.nvidia as nv
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import flowrl.kernels.gae_triton as G
    import flowrl.kernels.logprob_triton as L

    target = GPUTarget("cuda", 90, 32)

    def build(fn, sig, consts, warps):
        k = triton.compile(ASTSource(fn, sig, consts), target=target, options={"num_warps": warps})
        assert k.asm["cubin"], fn
        cuobjdump = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
        if os.path.exists(cuobjdump):  # LOCAL > 0 means register spills to local memory
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(k.asm["cubin"]); f.flush()
                usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
            assert " LOCAL:0 " in usage, usage

    for rev in (False, True):
        sig = {"r_ptr": "*bf16", "v_ptr": "*bf16", "m_ptr": "*u8", "adv_ptr": "*fp32", "ret_ptr": "*fp32",
               "T": "i32", "stride_r": "i32", "stride_v": "i32", "stride_m": "i32", "stride_o": "i32",
               "gamma": "fp32", "gamma_lam": "fp32", "BLOCK_T": "constexpr", "REVERSE_SCAN": "constexpr"}
        build(G.gae_kernel, sig, {"BLOCK_T": 2048, "REVERSE_SCAN": rev}, 8)
    build(G.group_norm_kernel, {"s_ptr": "*fp32", "o_ptr": "*fp32", "G": "i32", "eps": "fp32",
          "BLOCK_G": "constexpr", "SCALE": "constexpr"}, {"BLOCK_G": 16, "SCALE": True}, 1)
    for ent in (False, True):
        sig = {"x_ptr": "*bf16", "t_ptr": "*i64", "lp_ptr": "*fp32", "lse_ptr": "*fp32", "ent_ptr": "*fp32",
               "V": "i32", "T": "i32", "stride_b": "i64", "stride_t": "i64", "inv_temp": "fp32",
               "BLOCK_V": "constexpr", "WITH_ENT": "constexpr"}
        build(L._logprob_fwd_kernel, sig, {"BLOCK_V": 4096, "WITH_ENT": ent}, 8)
        sig = {"x_ptr": "*bf16", "t_ptr": "*i64", "lse_ptr": "*fp32", "ent_ptr": "*fp32", "glp_ptr": "*fp32",
               "gent_ptr": "*fp32", "gx_ptr": "*bf16", "V": "i32", "T": "i32", "stride_b": "i64", "stride_t": "i64",
               "inv_temp": "fp32", "BLOCK_V": "constexpr", "HAS_GLP": "constexpr", "HAS_GENT": "constexpr"}
        build(L._logprob_bwd_kernel, sig, {"BLOCK_V": 4096, "HAS_GLP": True, "HAS_GENT": ent}, 8)
    print("OK")
    """
)


def _nvidia_backend_available() -> bool:
    try:
        import triton.backends.nvidia.compiler  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _nvidia_backend_available(), reason="triton without its NVIDIA backend")
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence the 3.9 deprecation warning
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
