"""The DFlash draft model: a few Qwen3-style layers fed with target features, built from SGLang layers.

It owns no embedding and no LM head: the worker binds the target's embedding (``bind_target``), and
greedy drafting goes through the target's LM head (see ``drafting.py``).  Context K/V is never
computed by running the layers over the context: ``context_kv`` projects fused target features
through every layer's k/v projection ("KV injection").
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn

from sglang.srt.distributed import get_tensor_model_parallel_world_size
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, ReplicatedLinear, RowParallelLinear
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.layers.radix_attention import AttentionType, RadixAttention
from sglang.srt.layers.rotary_embedding import get_rope
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader

from sglang_dflash.config import SLIDING, DraftConfig, parse_draft_config


def apply_rope_neox(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """NeoX-style rotary embedding of ``x`` [..., N, heads, D] with ``cos_sin`` [N, D] = [cos | sin]."""
    cos, sin = cos_sin.to(x.dtype).unsqueeze(-2).chunk(2, dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class DraftAttention(nn.Module):
    def __init__(self, cfg: DraftConfig, layer_id: int, quant_config=None) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.head_dim = cfg.head_dim
        self.num_heads = cfg.num_heads // tp
        self.num_kv_heads = max(1, cfg.num_kv_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = QKVParallelLinear(
            cfg.hidden_size, self.head_dim, cfg.num_heads, cfg.num_kv_heads, bias=False, quant_config=quant_config
        )
        self.o_proj = RowParallelLinear(cfg.num_heads * self.head_dim, cfg.hidden_size, bias=False, quant_config=quant_config)
        self.q_norm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        self.rotary_emb = get_rope(self.head_dim, self.head_dim, cfg.max_position, cfg.rope_theta)
        sliding = cfg.layer_types[layer_id] == SLIDING
        self.attn = RadixAttention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            self.num_kv_heads,
            layer_id=layer_id,
            # SGLang's window counts the tokens before the query; HF's includes the query itself.
            sliding_window_size=cfg.sliding_window - 1 if sliding else -1,
            attn_type=AttentionType.DECODER if cfg.layer_causal[layer_id] else AttentionType.ENCODER_ONLY,
        )

    def _norm_heads(self, norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.reshape(-1, self.head_dim)).view(x.shape)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        qkv, _ = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self._norm_heads(self.q_norm, q.reshape(-1, self.num_heads, self.head_dim))
        k = self._norm_heads(self.k_norm, k.reshape(-1, self.num_kv_heads, self.head_dim))
        q, k = self.rotary_emb(positions, q.reshape(-1, self.q_size), k.reshape(-1, self.kv_size))
        out = self.attn(q, k, v, forward_batch)
        out, _ = self.o_proj(out)
        return out


class DraftMLP(nn.Module):
    def __init__(self, cfg: DraftConfig, quant_config=None) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(
            cfg.hidden_size, [cfg.intermediate_size] * 2, bias=False, quant_config=quant_config
        )
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, bias=False, quant_config=quant_config)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.gate_up_proj(x)
        x, _ = self.down_proj(self.act(x))
        return x


class DraftLayer(nn.Module):
    def __init__(self, cfg: DraftConfig, layer_id: int, quant_config=None) -> None:
        super().__init__()
        self.self_attn = DraftAttention(cfg, layer_id, quant_config)
        self.mlp = DraftMLP(cfg, quant_config)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, positions, hidden, forward_batch, residual):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, forward_batch)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class DFlashDraftModel(nn.Module):
    """Loaded by SGLang's model loader for ``architectures: ["DFlashDraftModel"]`` checkpoints."""

    def __init__(self, config, quant_config=None, prefix: str = "") -> None:
        super().__init__()
        self.config = config
        self.dflash = parse_draft_config(config, target=None)
        cfg = self.dflash
        self.layers = nn.ModuleList(DraftLayer(cfg, i, quant_config) for i in range(cfg.num_layers))
        self.fc = ReplicatedLinear(cfg.num_features * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.hidden_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self._embed: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def get_attention_sliding_window_size(self) -> Optional[int]:
        """SGLang's attention backends size their sliding-window metadata from this."""
        return self.dflash.sliding_window - 1 if self.dflash.sliding_window else None

    def bind_target(self, target_model: nn.Module) -> None:
        """Use the target's input embedding (Gemma's includes its sqrt(hidden) scale)."""
        self._embed = target_model.get_input_embeddings()

    def fuse_features(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K*H] concatenated target layer outputs -> [N, H] draft context."""
        x, _ = self.fc(features.to(self.fc.weight.dtype))
        return self.hidden_norm(x)

    @torch.no_grad()
    def context_kv(self, positions: torch.Tensor, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's context K/V at once: one projection per layer into a shared buffer, then
        k_norm and RoPE over all layers together (the positions are the same for every layer)."""
        ctx = self.fuse_features(features)
        attns = [layer.self_attn for layer in self.layers]
        a0, layers, n = attns[0], len(attns), ctx.shape[0]
        out = ctx.new_empty((layers, n, 2 * a0.kv_size))
        for i, attn in enumerate(attns):
            torch.matmul(ctx, attn.qkv_proj.weight[attn.q_size :].t(), out=out[i])
        heads = out.view(layers, n, 2, a0.num_kv_heads, a0.head_dim)
        k, v = heads[:, :, 0].float(), heads[:, :, 1]
        k_norm_w = torch.stack([attn.k_norm.weight for attn in attns]).view(layers, 1, 1, -1)
        k = (k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + a0.k_norm.variance_epsilon)).to(v.dtype) * k_norm_w
        k = apply_rope_neox(k, a0.rotary_emb.cos_sin_cache.index_select(0, positions))
        return [(k[i], v[i].contiguous()) for i in range(layers)]

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        **_: object,
    ) -> LogitsProcessorOutput:
        if input_embeds is None:
            if self._embed is None:
                raise RuntimeError("DFlash draft used before bind_target(): it has no embedding of its own")
            input_embeds = self._embed(input_ids)
        hidden, residual = input_embeds.to(self.fc.weight.dtype), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, forward_batch, residual)
        if hidden.numel():
            hidden, _ = self.norm(hidden, residual)
        return LogitsProcessorOutput(next_token_logits=None, hidden_states=hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        stacked = {  # checkpoint name piece -> (fused parameter piece, shard id)
            ".q_proj.": (".qkv_proj.", "q"),
            ".k_proj.": (".qkv_proj.", "k"),
            ".v_proj.": (".qkv_proj.", "v"),
            ".gate_proj.": (".gate_up_proj.", 0),
            ".up_proj.": (".gate_up_proj.", 1),
        }
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            name = name.removeprefix("model.")
            for piece, (fused, shard) in stacked.items():
                if piece in name:
                    target = name.replace(piece, fused)
                    params[target].weight_loader(params[target], tensor, shard)
                    loaded.add(target)
                    break
            else:
                if name not in params:
                    continue  # e.g. an embedding or lm_head some exports carry: the target's are used
                param = params[name]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
                loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"DFLASH draft checkpoint is missing tensors: {missing[:8]}")

