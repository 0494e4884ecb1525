import Foundation
@testable import PaliGemma
import XCTest

final class ConfigurationTests: XCTestCase {
    func decode(_ json: String) throws -> PaliGemmaConfig {
        let c = try JSONDecoder().decode(PaliGemmaConfig.self, from: Data(json.utf8))
        try c.validate()
        return c
    }

    /// The config.json of google/paligemma2-3b-pt-224 as published (trimmed of unused keys):
    /// absent fields must take Gemma2Config / SiglipVisionConfig defaults.
    let hub3B = """
    {"architectures":["PaliGemmaForConditionalGeneration"],"bos_token_id":2,"eos_token_id":1,"hidden_size":2048,
     "image_token_index":257152,"model_type":"paligemma","num_hidden_layers":26,"pad_token_id":0,"projection_dim":2304,
     "text_config":{"hidden_activation":"gelu_pytorch_tanh","hidden_size":2304,"intermediate_size":9216,
       "model_type":"gemma2","num_attention_heads":8,"num_hidden_layers":26,"num_image_tokens":256,
       "num_key_value_heads":4,"torch_dtype":"bfloat16","vocab_size":257216},
     "torch_dtype":"bfloat16","transformers_version":"4.47.0.dev0",
     "vision_config":{"hidden_size":1152,"image_size":224,"intermediate_size":4304,"model_type":"siglip_vision_model",
       "num_attention_heads":16,"num_hidden_layers":27,"num_image_tokens":256,"num_positions":256,"patch_size":14,
       "projection_dim":2304,"torch_dtype":"bfloat16","vision_use_head":false}}
    """

    func testHubConfigTakesTransformersDefaults() throws {
        let c = try decode(hub3B)
        XCTAssertEqual(c.numImageTokens, 256)
        XCTAssertEqual(c.imageTokenIndex, 257152)
        XCTAssertEqual(c.text.headDim, 256)
        XCTAssertEqual(c.text.queryPreAttnScalar, 256)
        XCTAssertEqual(c.text.finalLogitSoftcapping, 30)
        XCTAssertEqual(c.text.attnLogitSoftcapping, 50)
        XCTAssertEqual(c.text.slidingWindow, 4096)
        XCTAssertEqual(c.text.ropeTheta, 10000)
        XCTAssertEqual(c.text.slidingLayers.prefix(4), [true, false, true, false])
        XCTAssertEqual(c.text.eosTokenIDs, [1])
        XCTAssertEqual(c.vision.layerNormEps, 1e-6)
        XCTAssertEqual(c.vision.headDim, 72)
    }

    /// PaliGemma 1 (google/paligemma-3b-pt-224's layout): a Gemma 1 decoder takes GemmaConfig's
    /// defaults: no softcaps, no sliding window, scores scaled by head_dim^-0.5, two norms a layer.
    func testPaliGemma1ConfigTakesGemmaDefaults() throws {
        let c = try decode("""
        {"architectures":["PaliGemmaForConditionalGeneration"],"bos_token_id":2,"eos_token_id":1,"hidden_size":2048,
         "image_token_index":257152,"model_type":"paligemma","pad_token_id":0,"projection_dim":2048,
         "text_config":{"hidden_size":2048,"intermediate_size":16384,"model_type":"gemma","num_attention_heads":8,
           "num_hidden_layers":18,"num_image_tokens":256,"num_key_value_heads":1,"torch_dtype":"float32","vocab_size":257216},
         "vision_config":{"hidden_size":1152,"intermediate_size":4304,"model_type":"siglip_vision_model","num_attention_heads":16,
           "num_hidden_layers":27,"num_image_tokens":256,"patch_size":14,"projection_dim":2048,"projector_hidden_act":"gelu_fast",
           "vision_use_head":false}}
        """)
        XCTAssertEqual(c.text.modelType, "gemma")
        XCTAssertFalse(c.text.postNorms)
        XCTAssertEqual(c.text.headDim, 256)
        XCTAssertEqual(c.text.queryPreAttnScalar, 256)
        XCTAssertNil(c.text.finalLogitSoftcapping)
        XCTAssertNil(c.text.attnLogitSoftcapping)
        XCTAssertNil(c.text.slidingWindow)
        XCTAssertEqual(c.text.slidingLayers, Array(repeating: false, count: 18))
        XCTAssertEqual(c.text.numKeyValueHeads, 1)
        XCTAssertEqual(c.numImageTokens, 256)
        let again = try JSONDecoder().decode(PaliGemmaConfig.self, from: JSONEncoder().encode(c))
        XCTAssertEqual(again, c, "written back (quantize) and read again, it is the same model")
    }

    func testNullSoftcapIsOffAndAbsentIsDefault() throws {
        let off = try decode(hub3B.replacingOccurrences(of: "\"vocab_size\":257216}", with: "\"vocab_size\":257216,\"final_logit_softcapping\":null}"))
        XCTAssertNil(off.text.finalLogitSoftcapping)
        XCTAssertEqual(off.text.attnLogitSoftcapping, 50)
    }

    func testUnknownFieldsIgnoredAndRoundTrip() throws {
        let c = try decode(hub3B.replacingOccurrences(of: "\"model_type\":\"paligemma\"", with: "\"model_type\":\"paligemma\",\"brand_new_field\":[1,{\"x\":2}]"))
        let again = try JSONDecoder().decode(PaliGemmaConfig.self, from: JSONEncoder().encode(c))
        XCTAssertEqual(again, c)
    }

    func testNonsenseIsRefusedWithTheFieldNamed() throws {
        let cases: [(String, String, String)] = [
            ("\"num_attention_heads\":8", "\"num_attention_heads\":0", "num_attention_heads"),
            ("\"num_key_value_heads\":4", "\"num_key_value_heads\":3", "num_key_value_heads"),
            ("\"hidden_size\":1152", "\"hidden_size\":1153", "hidden_size"),
            ("\"intermediate_size\":9216", "\"intermediate_size\":-5", "intermediate_size"),
            ("\"patch_size\":14", "\"patch_size\":15", "patch_size"),
            ("\"vocab_size\":257216}", "\"vocab_size\":\"many\"}", "vocab_size"),
            ("\"vision_use_head\":false", "\"vision_use_head\":true", "vision_use_head"),
            ("\"model_type\":\"gemma2\"", "\"model_type\":\"gemma3\"", "gemma3"),
            ("\"vocab_size\":257216}", "\"vocab_size\":257216,\"rope_theta\":-10000}", "rope_theta"),
            ("\"vocab_size\":257216}", "\"vocab_size\":257216,\"rms_norm_eps\":1e30}", "rms_norm_eps"),
            ("\"vocab_size\":257216}", "\"vocab_size\":257216,\"max_position_embeddings\":0}", "max_position_embeddings"),
            ("\"model_type\":\"paligemma\"", "\"model_type\":\"paligemma\",\"quantization_config\":{\"format\":\"q3\",\"group_size\":32,"
                + "\"source_dtype\":\"bf16\",\"quant_method\":\"paligemma-swift\"}", "quantization_config.format 'q3'"),
        ]
        for (from, to, mention) in cases {
            let json = hub3B.replacingOccurrences(of: from, with: to)
            XCTAssertNotEqual(json, hub3B, "test edit did not apply: \(from)")
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).json")
            try Data(json.utf8).write(to: url)
            defer { try? FileManager.default.removeItem(at: url) }
            XCTAssertThrowsError(try PaliGemmaConfig.load(from: url), "\(to) accepted") { error in
                XCTAssertTrue("\(error)".contains(mention), "\(error) should mention \(mention)")
            }
        }
    }

    func testNotJSON() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).json")
        try Data("{\"text_config\": ".utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertThrowsError(try PaliGemmaConfig.load(from: url)) { error in
            guard case .invalidConfig = error as? CheckpointError else { return XCTFail("\(error)") }
        }
    }
}
