package dev.blipmq

import java.nio.file.Files
import java.nio.file.Path
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/**
 * TLS against brokers with certificates made for this run by
 * `blipmq-test-pki` (system property `blipmq.pki`, set by
 * scripts/test-kotlin.sh): a round trip, and each way it fails as a
 * [ConnectException] (600) that says why.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TlsTest {
    private val pki: Path = Files.createTempDirectory("blipmq-kotlin-pki").also { dir ->
        val tool = System.getProperty("blipmq.pki")
            ?: error("set the system property blipmq.pki to blipmq-test-pki (scripts/test-kotlin.sh does)")
        val process = ProcessBuilder(tool, dir.toString()).redirectErrorStream(true).start()
        check(process.waitFor() == 0) { "blipmq-test-pki failed: ${process.inputStream.bufferedReader().readText()}" }
    }

    private fun tlsBroker(cert: String = "broker", extra: Map<String, String> = emptyMap()) = Broker(
        mapOf(
            "BLIPMQ_TLS_CERT_FILE" to pki.resolve("$cert.pem").toString(),
            "BLIPMQ_TLS_KEY_FILE" to pki.resolve("$cert.key").toString(),
            "BLIPMQ_METRICS_TLS" to "false",
        ) + extra,
    )

    private val broker = tlsBroker()
    private val expired = tlsBroker("expired")
    private val mutual = tlsBroker(extra = mapOf("BLIPMQ_TLS_CLIENT_CA_FILE" to pki.resolve("client-ca.pem").toString()))

    @AfterAll
    fun stop() {
        listOf(broker, expired, mutual).forEach { it.close() }
        pki.toFile().deleteRecursively()
    }

    /** The certificate is for localhost, 127.0.0.1 and ::1. */
    private fun tlsAddr(b: Broker) = "tls://localhost:${b.addr.substringAfterLast(':')}"

    private val trusting = Tls(caFile = pki.resolve("ca.pem"))

    private fun refused(addr: String, tls: Tls?, reason: String) {
        val error = assertThrows<ConnectException> {
            runBlocking { BlipMQ.connect(addr, reconnect = false, connectTimeout = 5.seconds, tls = tls) }
        }
        assertEquals(600, error.code)
        assertTrue(error.message!!.contains(reason), "${error.message} should say $reason")
    }

    @Test
    fun `a round trip over TLS with the test CA`() = runBlocking {
        BlipMQ.connect(tlsAddr(broker), tls = trusting).use { client ->
            val subscription = client.subscribe("secure.>")
            client.publish("secure.greeting", "over TLS", qos = Qos.AT_LEAST_ONCE)
            assertEquals("over TLS", subscription.first().payloadText())
        }
        // The CA as text, and TLS by the option alone (a plain host:port).
        val pem = Files.readString(pki.resolve("ca.pem"))
        BlipMQ.connect("localhost:${broker.addr.substringAfterLast(':')}", tls = Tls(caPem = pem)).use { it.flush() }
    }

    @Test
    fun `an untrusted, misnamed or expired broker is refused saying why`() {
        refused(tlsAddr(broker), Tls(caFile = pki.resolve("other-ca.pem")), "UnknownIssuer")
        refused(tlsAddr(broker), trusting.copy(serverName = "blipmq.invalid"), "not valid for name")
        refused(tlsAddr(expired), trusting, "expired")
        // A plaintext client at the TLS port.
        refused(broker.addr, null, "speaks TLS")
    }

    @Test
    fun `mutual TLS needs the client certificate`() {
        val identified = trusting.copy(certFile = pki.resolve("client.pem"), keyFile = pki.resolve("client.key"))
        runBlocking { BlipMQ.connect(tlsAddr(mutual), tls = identified).use { it.flush() } }
        refused(tlsAddr(mutual), trusting, "")
    }

    @Test
    fun `options that cannot be used are refused before connecting`() {
        val half = assertThrows<InvalidArgumentException> { Tls(certFile = pki.resolve("client.pem")) }
        assertEquals(301, half.code)
        refused(tlsAddr(broker), Tls(caFile = pki.resolve("missing.pem")), "missing.pem")
    }
}
