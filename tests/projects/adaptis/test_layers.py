"""AdaptIS building blocks against direct computations: the split first conv,
relative coordinates, sampling at points, AdaIN, and the instance head's
batching of points over images."""
import math

import pytest
import torch
import torch.nn.functional as F

from d2ext_projects.adaptis.heads import Controller, InstanceSelectionHead
from d2ext_projects.adaptis.layers import AdaIN, SplitConv2d, relative_coords, sample_at_points


@pytest.mark.parametrize("size", [(5, 7), (1, 1), (12, 9)])
def test_split_conv_equals_concatenated_conv(size):
    torch.manual_seed(0)
    c, out, p = 6, 4, 5
    conv = SplitConv2d(c, out, 3)
    with torch.no_grad():
        conv.bias.normal_()
    features = torch.randn(2, c, *size)
    coords = torch.randn(p, 3, *size)
    batch_index = torch.tensor([1, 0, 1, 1, 0])
    split = conv(conv.image_part(features), coords, batch_index)
    # The reference computation: one conv over [coords, features of the point's image].
    concatenated = F.conv2d(torch.cat([coords, features[batch_index]], dim=1), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(split, concatenated, rtol=1e-5, atol=1e-5)


def test_relative_coords_by_hand():
    # A 2 x 3 map at stride 2: pixel centres x = 1, 3, 5 and y = 1, 3. Point (3, 1), R = 2.
    out = relative_coords(torch.tensor([[3.0, 1.0]]), (2, 3), stride=2.0, radius=2.0)
    dy = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    dx = torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
    dist = torch.tensor([[1.0, 0.0, 1.0], [math.sqrt(2), 1.0, math.sqrt(2)]]).clamp(max=1.0)
    torch.testing.assert_close(out[0], torch.stack([dy, dx, dist]))
    # far away: clamped
    far = relative_coords(torch.tensor([[100.0, -100.0]]), (2, 3), stride=2.0, radius=2.0)
    assert far[0, 0].eq(1.0).all() and far[0, 1].eq(-1.0).all() and far[0, 2].eq(1.0).all()


def test_sample_at_points_reads_pixel_centres_of_the_right_image():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    # stride 4: pixel (i, j) is centred at (4 j + 2, 4 i + 2)
    points = torch.tensor([[2.0, 2.0], [18.0, 14.0], [10.0, 6.0]])
    batch_index = torch.tensor([1, 0, 1])
    out = sample_at_points(features, points, batch_index, stride=4.0)
    expected = torch.stack([features[1, :, 0, 0], features[0, :, 3, 4], features[1, :, 1, 2]])
    torch.testing.assert_close(out, expected)
    # halfway between two pixel centres: the mean
    mid = sample_at_points(features, torch.tensor([[4.0, 2.0]]), torch.tensor([0]), stride=4.0)
    torch.testing.assert_close(mid[0], (features[0, :, 0, 0] + features[0, :, 0, 1]) / 2)


def test_adain_by_hand():
    adain = AdaIN(latent_dim=2, channels=3)
    x = torch.randn(2, 3, 4, 4)
    latent = torch.randn(2, 2)
    # at initialisation the scale is close to 1 and the bias close to 0
    close = adain(x, latent)
    torch.testing.assert_close(close, F.instance_norm(x), atol=0.1, rtol=0.1)
    with torch.no_grad():
        adain.scale.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        adain.bias.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, -1.0]]))
        adain.scale.bias.zero_()
        adain.bias.bias.fill_(0.5)
    out = adain(x, latent)
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    scale = 1 + torch.stack([latent[:, 0], latent[:, 1], latent.sum(1)], dim=1)
    bias = 0.5 + torch.stack([2 * latent[:, 0], torch.zeros(2), -latent[:, 1]], dim=1)
    torch.testing.assert_close(out, (x - mean) / std * scale[..., None, None] + bias[..., None, None], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("controller", ["conv", "mlp"])
def test_instance_head_points_of_several_images_in_one_call(controller):
    torch.manual_seed(0)
    head = InstanceSelectionHead(
        8, channels=8, num_convs_before=2, num_convs_after=1,
        controller=Controller(controller, 8, 4, 2, "BN"), norm_radius=10.0, norm="BN",
        output_scale=0.2, output_bias=-1.7,
    ).eval()
    features = torch.randn(2, 8, 6, 7)
    points = torch.tensor([[3.0, 5.0], [20.0, 11.0], [9.0, 9.0]])
    batch_index = torch.tensor([0, 1, 0])
    with torch.no_grad():
        together = head(features, 4.0, points, batch_index)
        alone = [head(features[b : b + 1], 4.0, points[k : k + 1], torch.tensor([0])) for k, b in enumerate(batch_index.tolist())]
    assert together.shape == (3, 1, 6, 7)
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-5)
    # a different point gives a different mask (the head does look at the point)
    with torch.no_grad():
        moved = head(features, 4.0, points + torch.tensor([8.0, 0.0]), batch_index)
    assert not torch.allclose(moved, together)
