// common.cuh: types and helpers shared by every kernel file. Inlined by build.rs, so it must
// include no host headers.
#pragma once
