"""Writes the crafted bad inputs in tests/data/bad/ (issue 11 regression tests). Run from the
repository root: python3 tests/tools/make_bad_inputs.py. Deterministic; needs only the stdlib."""
import glob, gzip, struct, zlib
import os

BAD = "tests/data/bad"
SRC = "tests/data/real/totalseg_example_ct_sm.nii.gz"
SERIES = sorted(glob.glob("tests/data/real/totalseg_example_ct_dicom/*"))


def nii(dims, code, bitpix, data, pixdim=(1.0, 1.0, 1.0), dim0=3):
    """A NIfTI-1 header taken from the real small CT, with new dims/type/spacing, + data."""
    h = bytearray(gzip.open(SRC).read()[:352])
    struct.pack_into("<8h", h, 40, dim0, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, code, bitpix)
    struct.pack_into("<3f", h, 80, *pixdim)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<ff", h, 112, 1.0, 0.0)  # scl_slope, scl_inter
    # sform = diag(pixdim) so the geometry is only what the test sets.
    struct.pack_into("<12f", h, 280, pixdim[0], 0, 0, 0, 0, pixdim[1], 0, 0, 0, 0, pixdim[2], 0)
    return bytes(h) + data


def write(name, b):
    with open(os.path.join(BAD, name), "wb") as f:
        f.write(b)


dims = (8, 8, 4)
n = 8 * 8 * 4
ramp = struct.pack(f"<{n}h", *[5 + 3 * i for i in range(n)])  # 5 .. 1538, like a real CT
good = nii(dims, 4, 16, ramp)
write("ramp_8x8x4.nii", good)
gz = bytearray(gzip.compress(good, mtime=0))
# 1: a corrupt CRC (last 8 bytes: CRC32, ISIZE) and a changed byte inside the deflate data.
crc = bytearray(gz)
crc[-8] ^= 0xFF
write("crc_mismatch.nii.gz", crc)
# A stored-length mismatch (ISIZE).
isz = bytearray(gz)
isz[-1] ^= 0x01
write("isize_mismatch.nii.gz", isz)
# 3: float32 with 3 NaN and 2 infinities.
vals = [float(i) for i in range(n)]
for i in (3, 50, 200):
    vals[i] = float("nan")
vals[7], vals[90] = float("inf"), float("-inf")
write("nan_inf_8x8x4.nii", nii(dims, 16, 32, struct.pack(f"<{n}f", *vals)))
# info: spacing 0, NaN; dim[0] = 9.
write("spacing_zero.nii", nii(dims, 4, 16, ramp, pixdim=(1.0, 0.0, 1.0)))
write("spacing_nan.nii", nii(dims, 4, 16, ramp, pixdim=(1.0, 1.0, float("nan"))))
write("dim0_9.nii", nii(dims, 4, 16, ramp, dim0=9))
# 5/6: masks on the same 8x8x4 grid.
mc = [1.0 if 2 <= i % 8 <= 5 and (i // 8) % 8 >= 4 else 0.0 for i in range(n)]
write("mask_01.nii", nii(dims, 16, 32, struct.pack(f"<{n}f", *mc)))
frac = [0.3 if i % 5 == 0 else (0.7 if i % 5 == 1 else 0.0) for i in range(n)]
write("mask_fractional.nii", nii(dims, 16, 32, struct.pack(f"<{n}f", *frac)))
labels = [[0.0, 1.0, 2.0, 255.0][i % 4] for i in range(n)]
write("mask_labels_0_1_2_255.nii", nii(dims, 16, 32, struct.pack(f"<{n}f", *labels)))
neg = [-1.0 if i == 10 else mc[i] for i in range(n)]
write("mask_negative.nii", nii(dims, 16, 32, struct.pack(f"<{n}f", *neg)))

# DICOM: one slice each of the real JPEG 2000 series, mutated.
slice0 = open(SERIES[0], "rb").read()
i = slice0.find(bytes([0x28, 0, 0x52, 0x10, ord("D"), ord("S"), 6, 0]))
assert slice0[i + 8 : i + 14] == b"-1024 "
write("dicom_intercept_abc.dcm", slice0[: i + 8] + b"abc   " + slice0[i + 14 :])
write("dicom_intercept_1.2.3.dcm", slice0[: i + 8] + b"1.2.3 " + slice0[i + 14 :])
# 8: (0029,1010) OB length 1336 -> 1337: every later header is read one byte off.
j = 2842
assert slice0[j : j + 4] == bytes([0x29, 0, 0x10, 0x10]) and struct.unpack_from("<I", slice0, j + 8)[0] == 1336
write("dicom_length_1337.dcm", slice0[: j + 8] + struct.pack("<I", 1337) + slice0[j + 12 :])
# 7: JPEG 2000 SIZ says 513 columns where Rows x Columns is 512 x 512.
k = slice0.find(bytes([0xFF, 0x4F, 0xFF, 0x51]))
assert struct.unpack_from(">I", slice0, k + 8)[0] == 512
write("dicom_j2k_width_513.dcm", slice0[: k + 8] + struct.pack(">I", 513) + slice0[k + 12 :])
print("ok")
