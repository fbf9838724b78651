"""SiQ-VL: pixel shuffle, the model's parts, persistence, generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.core.errors import DistillError
from distill.train.siqvl import SiQVLConfig, SiQVLForConditionalGeneration, pixel_shuffle
from distill.train.siqvl.build import load_student, load_vision_tower, save_student
from distill.train.siqvl.projector import PatchGridError
from tests.train_support import micro_student

torch.set_num_threads(1)


def test_pixel_shuffle_shapes_and_block_layout():
    side, dim, r = 4, 3, 2
    # feature value encodes (row, col, channel) so the layout can be read back
    grid = torch.tensor([[[row * 100 + col * 10 + ch for ch in range(dim)]
                          for col in range(side)] for row in range(side)], dtype=torch.float32)
    features = grid.reshape(1, side * side, dim).repeat(2, 1, 1)
    out = pixel_shuffle(features, r)
    assert out.shape == (2, (side // r) ** 2, dim * r * r)
    # token 1 = block (row 0, col 1): patches (0,2), (0,3), (1,2), (1,3), row-major
    expected = torch.cat([grid[0, 2], grid[0, 3], grid[1, 2], grid[1, 3]])
    assert torch.equal(out[0, 1], expected)
    assert torch.equal(pixel_shuffle(features, 1), features)


def test_pixel_shuffle_refuses_grids_it_cannot_split():
    with pytest.raises(PatchGridError, match="6x6.*not divisible by the pixel shuffle factor 4"):
        pixel_shuffle(torch.zeros(1, 36, 8), 4)
    with pytest.raises(PatchGridError, match="square"):
        pixel_shuffle(torch.zeros(1, 12, 8), 2)


def _config(**overrides) -> SiQVLConfig:
    fields = dict(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 16,
                       "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 24, "patch_size": 4},
        text_config={"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "vocab_size": 50},
        image_size=24, pixel_shuffle_factor=2, image_token_id=3)
    fields.update(overrides)
    return SiQVLConfig(**fields)


def test_model_refuses_a_patch_grid_not_divisible_by_the_factor():
    # 24 / 4 = a 6x6 grid: factor 2 and 3 work, 4 does not
    model = SiQVLForConditionalGeneration(_config(pixel_shuffle_factor=3))
    assert model.config.num_image_tokens == 4
    with pytest.raises(PatchGridError, match="not divisible"):
        SiQVLForConditionalGeneration(_config(pixel_shuffle_factor=4))


def test_siglip_v1_tower_works_too():
    torch.manual_seed(0)
    model = SiQVLForConditionalGeneration(_config())
    ids = torch.tensor([[1] + [3] * 9 + [5, 6, 7]])
    out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 24, 24), labels=ids)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=ids[:, 2:], pixel_values=torch.randn(1, 3, 24, 24), labels=ids[:, 2:])


def test_save_and_load_give_identical_outputs(tmp_path: Path):
    model, processor = micro_student()
    ids = torch.tensor([[1] + [processor.image_token_id] * 4 + [20, 21, 22, 23]])
    pixels = torch.randn(1, 3, 32, 32)
    before = model(input_ids=ids, pixel_values=pixels).logits
    save_student(model, processor, tmp_path / "m")
    loaded, loaded_processor = load_student(tmp_path / "m")
    after = loaded(input_ids=ids, pixel_values=pixels).logits
    assert torch.equal(before, after)
    assert loaded_processor.settings == processor.settings
    assert loaded_processor.image_token_id == processor.image_token_id


def test_a_vision_tower_loads_from_a_full_siglip2_checkpoint(tmp_path: Path):
    from transformers import Siglip2Config, Siglip2Model

    full = Siglip2Model(Siglip2Config(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "patch_size": 8, "num_patches": 16},
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 40}))
    full.save_pretrained(tmp_path / "siglip2")
    tower = load_vision_tower(tmp_path / "siglip2")
    source = full.vision_model.state_dict()
    loaded = tower.state_dict()
    assert source.keys() == loaded.keys()
    assert all(torch.equal(source[k], loaded[k]) for k in source)
    with pytest.raises(DistillError, match="no weights for"):
        micro, processor = micro_student()
        save_student(micro, processor, tmp_path / "student")
        load_vision_tower(tmp_path / "student")


def _greedy_without_cache(model, ids, pixels, steps):
    out = []
    embeds = model.embed(ids, pixels)
    for _ in range(steps):
        logits = model(inputs_embeds=embeds, use_cache=False).logits
        token = logits[:, -1].argmax(-1)
        out.append(int(token))
        embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], dim=1)
    return out


def test_generate_batched_left_padded_matches_step_by_step_greedy():
    model, processor = micro_student(seed=3)
    model.eval()
    image_id = processor.image_token_id
    short = [1] + [image_id] * 4 + [30, 31]
    long = [1] + [image_id] * 4 + [40, 41, 42, 43, 44]
    pixels = torch.randn(2, 3, 32, 32)
    width = len(long)
    ids = torch.full((2, width), processor.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    ids[0, width - len(short):], mask[0, width - len(short):] = torch.tensor(short), 1
    ids[1], mask[1] = torch.tensor(long), 1
    generated = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=mask,
                               max_new_tokens=6, do_sample=False, eos_token_id=None,
                               pad_token_id=processor.pad_token_id)
    assert generated.shape == (2, width + 6) and torch.equal(generated[:, :width], ids)
    generated = generated[:, width:]  # the prompt, then the new tokens, as transformers does
    with torch.no_grad():
        assert generated[0].tolist() == _greedy_without_cache(
            model, torch.tensor([short]), pixels[:1], 6)
        assert generated[1].tolist() == _greedy_without_cache(
            model, torch.tensor([long]), pixels[1:], 6)


def test_chunked_loss_matches_the_whole_loss_and_its_gradients(monkeypatch):
    import distill.train.siqvl.modeling as modeling

    model, processor = micro_student(seed=4)
    ids = torch.tensor([[1] + [processor.image_token_id] * 4 + list(range(20, 60))] * 2)
    labels = ids.clone()
    labels[:, :10] = -100
    pixels = torch.randn(2, 3, 32, 32)

    def run():
        model.zero_grad()
        out = model(input_ids=ids, pixel_values=pixels, labels=labels)
        out.loss_sum.backward()
        return out.loss_sum.detach(), model.projector.linear.weight.grad.clone()

    whole_loss, whole_grad = run()
    monkeypatch.setattr(modeling, "LOGITS_CHUNK_ELEMENTS", 7 * model.config.text_config.vocab_size)
    chunked_loss, chunked_grad = run()
    torch.testing.assert_close(chunked_loss, whole_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-4, atol=1e-6)
