{
  "targets": [
    {
      "target_name": "bmrt",
      "sources": [
        "src/binding.cc",
        "<!@(node -p \"require('fs').readdirSync('src/core').filter(f => f.endsWith('.cc')).map(f => 'src/core/' + f).join(' ')\")"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++1y", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-frtti", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "conditions": [
        ["'<!(node -p \"process.env.BMRT_CUDA_LINK ? 1 : 0\")'=='1'", {
          "defines": ["BMRT_WITH_CUDA"],
          "libraries": ["<!@(node -p \"process.env.BMRT_CUDA_LINK\")"]
        }],
        ["OS=='win'", {
          "defines": ["NOMINMAX", "_USE_MATH_DEFINES"],
          "msvs_settings": {
            "VCCLCompilerTool": { "ExceptionHandling": 1, "RuntimeTypeInfo": "true", "Optimization": 2, "AdditionalOptions": ["/std:c++17", "/utf-8"] }
          }
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "GCC_ENABLE_CPP_RTTI": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "GCC_OPTIMIZATION_LEVEL": "3"
          }
        }]
      ]
    }
  ]
}
