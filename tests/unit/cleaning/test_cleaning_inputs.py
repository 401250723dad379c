"""Cleaning helpers that need no OCR: pixel-format normalisation, final resize, config schema."""

import numpy as np
import pydantic
import pytest

from usfmae.cleaning import CleaningConfig, resize_square, to_rgb_uint8


def test_12_bit_data_is_stretched_to_its_own_range():
    image = np.array([[0, 2048, 4095]], np.uint16)
    assert to_rgb_uint8(image)[0, :, 0].tolist() == [0, 128, 255]


def test_16_bit_data_follows_the_readers_min_max_rule():
    assert to_rgb_uint8(np.array([[0, 65535]], np.uint16))[0, :, 1].tolist() == [0, 255]
    assert to_rgb_uint8(np.array([[1000, 20500, 40000]], np.uint16))[0, :, 2].tolist() == [0, 128, 255]
    assert to_rgb_uint8(np.array([[7, 200]], np.uint16))[0, :, 2].tolist() == [0, 255]  # same rule at any range


def test_float_signed_bool_and_rgba():
    assert to_rgb_uint8(np.array([[0.0, 0.5, 1.0]]))[0, :, 0].tolist() == [0, 128, 255]
    signed = to_rgb_uint8(np.array([[-100, 0, 100]], np.int16))[0, :, 0]
    assert signed[0] == 0 and abs(int(signed[1]) - 128) <= 1 and signed[2] == 255
    assert to_rgb_uint8(np.array([[True, False]]))[0, :, 0].tolist() == [255, 0]
    rgba = np.dstack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30, 40)])
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [10, 20, 30]


def test_gray_becomes_three_equal_channels():
    out = to_rgb_uint8(np.arange(12, dtype=np.uint8).reshape(3, 4, 1))
    assert out.shape == (3, 4, 3) and np.array_equal(out[:, :, 0], out[:, :, 2])


def test_nan_becomes_black_and_all_nan_is_rejected_with_source():
    assert to_rgb_uint8(np.array([[np.nan, 0.0, 1.0]]))[0, :, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="frame 3"):
        to_rgb_uint8(np.array([[np.nan, np.inf]]), "frame 3")


def test_resize_square_uses_area_interpolation():
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, :200] = 200
    out = resize_square(image, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[:, 111].tolist() == [[200] * 3] * 224 and out[0, 112:].max() <= 200
    with pytest.raises(ValueError):
        resize_square(image, 0)


def test_config_rejects_unknown_fields_and_bad_mode():
    with pytest.raises(pydantic.ValidationError):
        CleaningConfig(text={"enabeld": False})
    with pytest.raises(pydantic.ValidationError):
        CleaningConfig(mode="fastest")


def test_config_round_trips_as_plain_data():
    cfg = CleaningConfig(mode="reference", colour={"clusters": 4})
    assert CleaningConfig.model_validate(cfg.model_dump()) == cfg


def test_every_config_field_has_a_description():
    def walk(model: type[pydantic.BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            if isinstance(field.annotation, type) and issubclass(field.annotation, pydantic.BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    walk(CleaningConfig, "")


def test_reference_defaults_are_the_papers():
    cfg = CleaningConfig()
    assert (cfg.colour.clahe_clip, cfg.colour.clahe_tiles, cfg.colour.saturation_min) == (2.0, 8, 40)
    assert (cfg.colour.value_min, cfg.colour.clusters, cfg.colour.min_component_px) == (20, 3, 20)
    assert (cfg.grayscale.canny_low, cfg.grayscale.canny_high, cfg.grayscale.dilate_kernel) == (50, 150, 3)
    assert (cfg.grayscale.min_area, cfg.grayscale.max_area) == (30, 2000)
    assert (cfg.morphology.kernel, cfg.inpaint.method, cfg.inpaint.radius) == (5, "ns", 3)
