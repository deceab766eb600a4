using System.Text.Json;
using System.Text.Json.Serialization;
using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// An item is stored as the JSON text System.Text.Json wrote for it, and read back from that text: whatever
/// System.Text.Json writes and reads comes back as put, including what depends on the order of properties (a type
/// discriminator must come first) and strings PostgreSQL's <c>jsonb</c> would refuse (U+0000).
/// </summary>
public sealed class QueuePayloadTests(PostgresServer server) : PostgresTest(server)
{
    [JsonPolymorphic]
    [JsonDerivedType(typeof(Email), "email")]
    [JsonDerivedType(typeof(Sms), "sms")]
    public abstract record Job;

    public sealed record Email(string To, string Subject) : Job;

    public sealed record Sms(string To) : Job;

    [JsonPolymorphic]
    [JsonDerivedType(typeof(Reminder), "reminder")]
    public record Message(string Text);

    public sealed record Reminder(string Text, DateTimeOffset At) : Message(Text);

    [PostgresFact]
    public async Task ItemsOfAnAbstractPolymorphicType_ComeBackAsPut()
    {
        Member member = await JoinAsync();
        PostgresQueue<Job> queue = member.Coordinator.CreateQueue<Job>("jobs");
        Job[] jobs = [new Email("a@example.com", "hello"), new Sms("+100")];
        await queue.PutManyAsync(jobs);

        IReadOnlyList<PostgresDelivery<Job>> deliveries = await queue.GetManyAsync(2, Bound);

        deliveries.Select(d => d.Item).Should().Equal(jobs);
        await queue.CompleteManyAsync(deliveries);
    }

    [PostgresFact]
    public async Task ItemsOfAConcretePolymorphicType_ComeBackAsPut_TheBaseAndTheDerived()
    {
        Member member = await JoinAsync();
        PostgresQueue<Message> queue = member.Coordinator.CreateQueue<Message>("messages");
        Message[] messages = [new Reminder("call", DateTimeOffset.UnixEpoch), new Message("plain")];
        await queue.PutManyAsync(messages);

        IReadOnlyList<PostgresDelivery<Message>> deliveries = await queue.GetManyAsync(2, Bound);

        deliveries.Select(d => d.Item).Should().Equal(messages);
        await queue.CompleteManyAsync(deliveries);
    }

    [PostgresFact]
    public async Task AStringWithU0000_ComesBackAsPut()
    {
        Member member = await JoinAsync();
        PostgresQueue<string> queue = member.Coordinator.CreateQueue<string>("strings");
        await queue.PutAsync("a\0b");

        await using PostgresDelivery<string> delivery = await queue.GetAsync(Bound);

        delivery.Item.Should().Be("a\0b");
        await delivery.CompleteAsync();
    }

    [PostgresFact]
    public async Task TheStoredPayload_IsTheTextSystemTextJsonWrote()
    {
        Member member = await JoinAsync();
        PostgresQueue<Job> queue = member.Coordinator.CreateQueue<Job>("jobs");
        Job job = new Email("z@example.com", "a subject longer than the keys");
        await queue.PutAsync(job);

        (await ScalarAsync<string>("SELECT payload::text FROM @schema.queue_items"))
            .Should().Be(JsonSerializer.Serialize(job), "the properties keep their order and nothing is normalized");
    }
}
